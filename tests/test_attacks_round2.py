"""Round two of attacks (issues 13-16's new surfaces), over HTTP against a real server with
partners' own credentials: each test one attack, tried as a partner would."""

from __future__ import annotations

import pytest

from tests.test_pathway_e2e import Parties, conf, conf_client, parties  # noqa: F401  (fixtures)
from tests.test_subscriptions import quiet, subscription  # noqa: F401  (fixtures)

# Hosts that only look local: a prefix check on "http://127.0.0.1" / "http://localhost" passed
# them, so notifications went in clear (http) to a host anywhere.
LOOK_LOCAL = [
    "http://127.0.0.1.attacker.example/hook",
    "http://localhost.attacker.example/hook",
    "http://localhost@attacker.example/hook",
    "http://127.0.0.1:80@attacker.example/hook",
    "http://localhostattacker.example/hook",
]
# Addresses inside the gateway's own network (cloud metadata, private ranges, unspecified).
INTERNAL = [
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.7/hook",
    "https://192.168.1.1/hook",
    "https://[fd00::1]/hook",
    "https://0.0.0.0/hook",
    "https://[::ffff:169.254.169.254]/hook",
]


@pytest.mark.parametrize("endpoint", LOOK_LOCAL + INTERNAL)
def test_a_subscription_endpoint_cannot_pass_for_local_or_reach_internal_addresses(quiet: Parties, endpoint: str) -> None:  # noqa: F811
    facility = quiet.facility
    answer = facility.post("Subscription", {"resourceType": "Subscription", **subscription(endpoint, "facility-referral")})
    assert answer.status_code == 422, answer.text
    issue = answer.json()["issue"][0]
    assert issue["expression"] == ["Subscription.channel.endpoint"]
    assert endpoint not in {e["resource"]["channel"]["endpoint"] for e in facility.get("Subscription").json()["entry"]}


def test_a_real_local_or_public_https_endpoint_is_still_accepted(quiet: Parties) -> None:  # noqa: F811
    facility = quiet.facility
    made: list[str] = []
    for endpoint in ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "https://tayview.example/hook", "https://81.144.200.7/hook"]:
        answer = facility.post("Subscription", {"resourceType": "Subscription", **subscription(endpoint, "facility-referral")})
        assert answer.status_code == 201, f"{endpoint}: {answer.text}"
        made.append(answer.json()["channel"]["endpoint"])
    assert set(made) <= {e["resource"]["channel"]["endpoint"] for e in facility.get("Subscription").json()["entry"]}

