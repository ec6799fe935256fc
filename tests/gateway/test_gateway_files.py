"""`/api/files` against real SeaweedFS: listing, text, presigned GET/PUT, multipart, delete; keys
checked; one user's objects out of another's reach; a rotated S3 key voids its URLs; request
size and rate limits."""

import asyncio
import hashlib
import os
from collections.abc import Callable

import httpx
from gateway_helpers import Gateway, assert_error, auth
from sqlmodel import Session

from rondo.contracts.api import MULTIPART_PART_SIZE
from rondo.contracts.storage import make_s3_client
from rondo.gateway.users import NewUser, rotate_user_s3_key

MakeUser = Callable[[], NewUser]


async def upload(client: httpx.AsyncClient, user: NewUser, key: str, body: bytes) -> None:
    """Upload the way a client does: ask for a presigned PUT, then PUT straight to the store."""
    answer = await client.post(
        "/api/files/upload-url", json={"key": key, "content_type": "text/plain"}, headers=auth(user)
    )
    assert answer.status_code == 200, answer.text
    async with httpx.AsyncClient(timeout=30) as store:
        put = await store.put(
            answer.json()["url"], content=body, headers={"Content-Type": "text/plain"}
        )
    assert put.status_code == 200, put.text


async def download_url(client: httpx.AsyncClient, user: NewUser, key: str) -> str:
    answer = await client.post("/api/files/download-url", json={"key": key}, headers=auth(user))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["url"])


async def test_list_read_download_and_delete(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    user = make_user()
    await upload(client, user, "jobs/a/files_out/server.log", b"line 1\nline 2\n")
    await upload(client, user, "jobs/a/files_out/client_0/round_0/out.txt", b"x")
    await upload(client, user, "jobs/a/notes.txt", "héllo wörld".encode())
    await upload(client, user, "jobs/a/weights.bin", b"\x00\x01\x02")

    root = await client.get("/api/files", headers=auth(user))
    assert root.json() == {"prefix": "", "folders": ["jobs/"], "objects": [], "truncated": False}
    listing = (
        await client.get("/api/files", params={"prefix": "jobs/a/"}, headers=auth(user))
    ).json()
    assert listing["folders"] == ["jobs/a/files_out/"]
    assert {(o["key"], o["size"]) for o in listing["objects"]} == {
        ("jobs/a/notes.txt", 13),
        ("jobs/a/weights.bin", 3),
    }
    assert all(o["last_modified"] for o in listing["objects"])

    text = await client.get(
        "/api/files/text", params={"key": "jobs/a/files_out/server.log"}, headers=auth(user)
    )
    assert text.json() == {
        "key": "jobs/a/files_out/server.log",
        "size": 14,
        "truncated": False,
        "text": "line 1\nline 2\n",
    }
    # Cut inside "é" (2 bytes): the half character is left out, not garbled.
    cut = await client.get(
        "/api/files/text", params={"key": "jobs/a/notes.txt", "max_bytes": 2}, headers=auth(user)
    )
    assert cut.json() == {
        "key": "jobs/a/notes.txt",
        "size": 13,
        "truncated": True,
        "text": "h",
    }
    binary = await client.get(
        "/api/files/text", params={"key": "jobs/a/weights.bin"}, headers=auth(user)
    )
    assert_error(binary, 415, "not_text")

    url = await download_url(client, user, "jobs/a/files_out/server.log")
    async with httpx.AsyncClient() as store:
        assert (await store.get(url)).content == b"line 1\nline 2\n"
    missing = await client.post(
        "/api/files/download-url", json={"key": "jobs/a/nothing"}, headers=auth(user)
    )
    assert_error(missing, 404, "not_found")

    deleted = await client.delete(
        "/api/files", params={"key": "jobs/a/notes.txt"}, headers=auth(user)
    )
    assert deleted.status_code == 204
    again = await client.delete(
        "/api/files", params={"key": "jobs/a/notes.txt"}, headers=auth(user)
    )
    assert_error(again, 404, "not_found")
    listing = (
        await client.get("/api/files", params={"prefix": "jobs/a/"}, headers=auth(user))
    ).json()
    assert [o["key"] for o in listing["objects"]] == ["jobs/a/weights.bin"]


async def test_unsafe_keys_are_400_and_change_nothing(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    user = make_user()
    await upload(client, user, "jobs/a/x.txt", b"x")
    for key in ("../other/x", "jobs/../x", "/jobs/a/x.txt", "jobs/a/\x07.txt", "jobs/a/\n"):
        for response in (
            await client.get("/api/files", params={"prefix": key}, headers=auth(user)),
            await client.get("/api/files/text", params={"key": key}, headers=auth(user)),
            await client.delete("/api/files", params={"key": key}, headers=auth(user)),
            await client.post("/api/files/download-url", json={"key": key}, headers=auth(user)),
            await client.post("/api/files/upload-url", json={"key": key}, headers=auth(user)),
            await client.post(
                "/api/files/multipart/init", json={"key": key, "size": 10}, headers=auth(user)
            ),
        ):
            body = assert_error(response, 400, "invalid_key")
            assert "bucket" in body["hint"]
    listing = (
        await client.get("/api/files", params={"prefix": "jobs/a/"}, headers=auth(user))
    ).json()
    assert [o["key"] for o in listing["objects"]] == ["jobs/a/x.txt"]


async def test_users_never_reach_each_others_objects(
    client: httpx.AsyncClient, make_user: MakeUser, gateway: Gateway
) -> None:
    owner, stranger = make_user(), make_user()
    await upload(client, owner, "jobs/a/secret.txt", b"owner's")
    await upload(client, owner, "jobs/a/other.txt", b"also owner's")

    listing = await client.get("/api/files", params={"prefix": "jobs/a/"}, headers=auth(stranger))
    assert listing.json()["objects"] == []
    for response in (
        await client.get(
            "/api/files/text", params={"key": "jobs/a/secret.txt"}, headers=auth(stranger)
        ),
        await client.post(
            "/api/files/download-url", json={"key": "jobs/a/secret.txt"}, headers=auth(stranger)
        ),
        await client.delete(
            "/api/files", params={"key": "jobs/a/secret.txt"}, headers=auth(stranger)
        ),
    ):
        assert_error(response, 404, "not_found")

    url = await download_url(client, owner, "jobs/a/secret.txt")
    async with httpx.AsyncClient() as store:
        assert (await store.get(url)).status_code == 200
        # The signature covers the path: the same URL for another object is refused.
        assert (await store.get(url.replace("secret.txt", "other.txt"))).status_code == 403
        # The stranger's own S3 key cannot read the owner's bucket, even presigned.
        stranger_s3 = make_s3_client(
            gateway.app.state.settings.s3_endpoint, stranger.s3_access_key, stranger.s3_secret_key
        )
        foreign = stranger_s3.generate_presigned_url(
            "get_object", Params={"Bucket": owner.bucket, "Key": "jobs/a/secret.txt"}
        )
        assert (await store.get(foreign)).status_code == 403
    stranger_put = await client.post(
        "/api/files/upload-url", json={"key": "jobs/a/secret.txt"}, headers=auth(stranger)
    )
    async with httpx.AsyncClient() as store:
        await store.put(
            stranger_put.json()["url"],
            content=b"stranger's",
            headers={"Content-Type": "application/octet-stream"},
        )
        # The stranger's upload lands in the stranger's bucket, never in the owner's.
        assert (await store.get(url)).content == b"owner's"


async def test_rotating_the_s3_key_voids_presigned_urls_at_once(
    client: httpx.AsyncClient, gateway: Gateway, make_user: MakeUser
) -> None:
    user = make_user()
    await upload(client, user, "jobs/a/model.pt", b"weights")
    old_url = await download_url(client, user, "jobs/a/model.pt")

    with Session(gateway.app.state.engine) as session:
        rotated = rotate_user_s3_key(
            session, gateway.app.state.storage_admin, gateway.app.state.secret_box, user.name
        )
    assert rotated.revoked_access_key == user.s3_access_key

    async with httpx.AsyncClient() as store:
        assert (await store.get(old_url)).status_code == 403
        new_url = await download_url(client, user, "jobs/a/model.pt")
        assert rotated.s3_access_key in new_url
        assert (await store.get(new_url)).content == b"weights"


async def test_multipart_upload_of_a_file_over_50_mib(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    user = make_user()
    data = os.urandom(60_000_000)
    key = "jobs/big/shards/shard_0.zip"
    started = await client.post(
        "/api/files/multipart/init",
        json={"key": key, "size": len(data), "content_type": "application/zip"},
        headers=auth(user),
    )
    upload = started.json()
    assert upload["part_size"] == MULTIPART_PART_SIZE and len(upload["urls"]) == 2

    async with httpx.AsyncClient(timeout=60) as store:
        answers = await asyncio.gather(
            *(
                store.put(
                    url, content=data[n * MULTIPART_PART_SIZE : (n + 1) * MULTIPART_PART_SIZE]
                )
                for n, url in enumerate(upload["urls"])
            )
        )
    parts = [
        {"part_number": n + 1, "etag": answer.headers["ETag"]} for n, answer in enumerate(answers)
    ]
    completed = await client.post(
        "/api/files/multipart/complete",
        json={"upload_id": upload["upload_id"], "key": key, "parts": parts[::-1]},
        headers=auth(user),
    )
    assert completed.status_code == 200, completed.text
    assert completed.json()["key"] == key

    url = await download_url(client, user, key)
    async with httpx.AsyncClient(timeout=60) as store:
        fetched = await store.get(url)
    assert hashlib.sha256(fetched.content).digest() == hashlib.sha256(data).digest()

    aborted = await client.post(
        "/api/files/multipart/init", json={"key": "jobs/big/x", "size": 5}, headers=auth(user)
    )
    body = {"upload_id": aborted.json()["upload_id"], "key": "jobs/big/x"}
    assert (
        await client.post("/api/files/multipart/abort", json=body, headers=auth(user))
    ).status_code == 204
    late = await client.post(
        "/api/files/multipart/complete",
        json={**body, "parts": [{"part_number": 1, "etag": '"x"'}]},
        headers=auth(user),
    )
    assert_error(late, 404, "upload_not_found")


async def test_oversized_requests_get_413(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    user = make_user()
    huge = {"key": "jobs/a/x", "content_type": "a" * (2 * 1024 * 1024)}
    declared = await client.post("/api/files/upload-url", json=huge, headers=auth(user))
    assert_error(declared, 413, "request_too_large")

    async def chunks():  # no Content-Length: counted as it streams
        for _ in range(3):
            yield b" " * (512 * 1024)

    streamed = await client.post(
        "/api/files/upload-url",
        content=chunks(),
        headers={**auth(user), "Content-Type": "application/json"},
    )
    assert_error(streamed, 413, "request_too_large")


async def test_a_key_over_its_rate_gets_429_with_retry_after(
    client: httpx.AsyncClient, make_user: MakeUser, gateway: Gateway
) -> None:
    user, neighbour = make_user(), make_user()
    burst = gateway.app.state.settings.gateway_rate_limit_burst
    answers = await asyncio.gather(
        *(client.get("/api/jobs", headers=auth(user)) for _ in range(burst + 10))
    )
    limited = [answer for answer in answers if answer.status_code == 429]
    assert limited and len(limited) <= 10 + 1
    body = assert_error(limited[0], 429, "rate_limited")
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert "Retry-After" in body["hint"]
    # The limit is per key: another user is not slowed down.
    assert (await client.get("/api/jobs", headers=auth(neighbour))).status_code == 200
