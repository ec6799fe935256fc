"""Every durable consumer of every service goes through `rondo.contracts.consumers`
(one ack policy: retried with a growing delay, dead-lettered only when never valid): no
service subscribes to a stream by hand. The policy itself is tested in test_events_policy.py,
and through each service's consumers in the other files here."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FACTORY = REPO / "libs" / "contracts" / "consumers.py"
# Core NATS, answered not stored: health requests (`rondo.contracts.bus.register_health`).
CORE_SUBSCRIBERS = {REPO / "libs" / "contracts" / "bus.py"}


def _subscriber_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "subscriber"
    ]


def test_no_service_declares_a_consumer_outside_the_factory() -> None:
    sources = [
        path
        for folder in ("services", "libs", "cli")
        for path in (REPO / folder).rglob("*.py")
        if path != FACTORY
    ]
    by_hand = []
    for path in sources:
        for call in _subscriber_calls(path):
            keywords = {keyword.arg for keyword in call.keywords}
            if path in CORE_SUBSCRIBERS and not keywords & {"durable", "stream"}:
                continue
            by_hand.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert by_hand == [], f"subscribed without rondo.contracts.consumers: {by_hand}"
