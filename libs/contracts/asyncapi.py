"""The AsyncAPI document of the Rondo bus, generated from the event models.

`python -m rondo.contracts.asyncapi > libs/contracts/asyncapi.json` refreshes the committed
copy; a test fails when it is stale.
"""

import json

from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI

from rondo.contracts.events import ALL_EVENTS


def build_document() -> dict[str, object]:
    broker = NatsBroker()
    for event in ALL_EVENTS:
        broker.publisher(
            event.SUBJECT.replace("{", "<").replace("}", ">"),
            schema=event,
            title=event.__name__,
            description=(event.__doc__ or "").strip().splitlines()[0] if event.__doc__ else None,
        )
    spec = AsyncAPI(broker, title="Rondo bus", version="1", schema_version="3.0.0")
    return json.loads(spec.to_specification().to_json())


def render() -> str:
    return json.dumps(build_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
