"""`AppendOnlyObjectStore`: writing into a NATS object store without any right to read it.

nats-py's `ObjectStore.put` first reads the object's current metadata (a stream message get,
which would let the writer read any message of the store, other agents' checkpoints
included) and afterwards purges the chunks of the object it replaced. A worker-agent may only
publish chunks and metadata (`rondo.contracts.bus_permissions`), so its puts go through this
class: the same wire format (readers use the stock `ObjectStore.get`), no read, no purge.

Chunks of an object written again under the same name (an agent repeating a put after a
restart) stay behind until the reader deletes the object; the artifacts service deletes
each object once written, and object names are unique per job, run and file.
"""

import asyncio
import base64
import io
import json
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

from nats.js import api
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.js.object_store import ObjectStore

CHUNK_SIZE = 128 * 1024  # nats-py's default chunk size


class AppendOnlyObjectStore(ObjectStore):
    """An object store handle whose `put` only publishes (see the module docstring)."""

    async def put(
        self,
        name: str,
        data: str | bytes | io.BufferedIOBase | Any,
        meta: api.ObjectMeta | None = None,
    ) -> api.ObjectInfo:
        """Publish `data` as object `name`: its chunks on a fresh subject, then its metadata
        (a roll-up, replacing any earlier metadata of the name). Returns the new object's
        info (size, digest)."""
        if meta is None:
            meta = api.ObjectMeta(name=name)
        elif name:
            meta.name = name
        if meta.options is None:
            meta.options = api.ObjectMetaOptions(max_chunk_size=CHUNK_SIZE)
        chunk_size = meta.options.max_chunk_size or CHUNK_SIZE
        reader = _as_reader(data)

        nuid = self._js._nc._nuid.next().decode()
        chunk_subject = f"$O.{self._name}.C.{nuid}"
        digest = sha256()
        chunks = 0
        size = 0
        while True:
            # Files are read in a thread: a checkpoint can be hundreds of MB.
            payload = await asyncio.to_thread(reader.read, chunk_size)
            if not payload:
                break
            digest.update(payload)
            await self._js.publish(chunk_subject, payload)
            chunks += 1
            size += len(payload)

        info = api.ObjectInfo(
            name=meta.name,
            description=meta.description,
            headers=meta.headers,
            options=meta.options,
            bucket=self._name,
            nuid=nuid,
            size=size,
            chunks=chunks,
            digest="SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode(),
            mtime=datetime.now(UTC).isoformat(),
        )
        encoded_name = base64.urlsafe_b64encode(meta.name.encode()).decode()
        await self._js.publish(
            f"$O.{self._name}.M.{encoded_name}",
            json.dumps(info.as_dict()).encode(),
            headers={api.Header.ROLLUP: MSG_ROLLUP_SUBJECT},
        )
        return info


def _as_reader(data: str | bytes | Any) -> Any:
    """Anything `put` accepts as something with `read(n)`."""
    if isinstance(data, str):
        return io.BytesIO(data.encode())
    if isinstance(data, bytes | bytearray):
        return io.BytesIO(bytes(data))
    if hasattr(data, "buffer"):  # a text file: read its bytes
        return data.buffer
    if hasattr(data, "read"):
        return data
    raise TypeError(f"cannot put {type(data).__name__} into an object store")
