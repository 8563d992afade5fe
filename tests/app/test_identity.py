"""Identities that cannot be spoofed, under the real supervisor and the real Redis/Postgres.

API keys (configured as hashes) name the user; X-User-Id counts only from a
trusted proxy; everyone else is anonymous, with rate-limit counters in a
bounded keyspace that expire with their window.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.app.cluster import REDIS_URL, Backend, backend, start
from tests.supervisor_process import SupervisorProcess

pytestmark = pytest.mark.services

KEYS = {"alice": "sk-alice-0123", "bob": "sk-bob-4567", "mallory": "sk-mallory-89"}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def rate_keys(slice_: Backend) -> dict[str, int]:
    """The slice's rate-limit keys and their TTLs (ms)."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = list(client.scan_iter(match=f"{slice_.name}:rl:*"))
        return {key: int(client.pttl(key)) for key in keys}
    finally:
        client.close()


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SupervisorProcess, Backend]]:
    """Two workers; loopback is NOT a trusted proxy here (only 10.9.9.9 is)."""
    tmp = tmp_path_factory.mktemp("identity")
    keyfile = tmp / "api-keys"
    keyfile.write_text(
        f"# on-call rotation\nbob:{sha256(KEYS['bob'])}\nmallory:{sha256(KEYS['mallory'])}\n"
    )
    with backend() as slice_:
        env = {
            **slice_.env,
            "FASTAGENTIC_RATE_LIMIT": "5/minute",
            "FASTAGENTIC_API_KEYS": f"alice:{sha256(KEYS['alice'])}",
            "FASTAGENTIC_API_KEYS_FILE": str(keyfile),
            "FORWARDED_ALLOW_IPS": "10.9.9.9",  # the servers' and the app's trust list
            "FASTAGENTIC_LLM_FAKE_TOKENS": "2",
        }
        process = start(tmp, "--workers", "2", env=env)
        try:
            process.wait_serving(2, timeout=15)
            yield process, slice_
        finally:
            process.stop()


def post(url: str, headers: dict[str, str], **extra: str) -> httpx.Response:
    # A new connection each time: the two workers count together in Redis.
    return httpx.post(f"{url}/agent", json={"prompt": "p"}, headers={**headers, **extra}, timeout=5)


def bearer(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[user]}"}


def test_rotating_user_ids_neither_bypass_the_limit_nor_grow_redis(
    guarded: tuple[SupervisorProcess, Backend],
) -> None:
    process, slice_ = guarded
    codes = [post(process.url, {"x-user-id": f"rotating-{i}"}).status_code for i in range(8)]
    assert codes == [202] * 5 + [429] * 3  # one anonymous caller, whatever it claims
    # A victim named in the header is not locked out: the key is what counts.
    assert post(process.url, bearer("alice"), **{"x-user-id": "rotating-0"}).status_code == 202
    for i in range(200):  # unknown keys are refused before any counter exists
        assert post(process.url, {"authorization": f"Bearer guess-{i}"}).status_code == 401
    keys = rate_keys(slice_)
    # One anonymous bucket (127.0.0.1) and at most the configured users: not 208 keys.
    assert len([k for k in keys if ":rl:anon:" in k]) == 1, keys
    assert len(keys) <= 1 + len(KEYS) and f"{slice_.name}:rl:key:alice" in keys
    assert all(0 < ttl <= 60_000 for ttl in keys.values())  # every counter expires


def test_api_keys_define_the_user(guarded: tuple[SupervisorProcess, Backend]) -> None:
    process, _ = guarded
    refused = post(process.url, {"authorization": "Bearer sk-alice-0124"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["message"] == "Unknown API key."
    bob = [post(process.url, {"x-api-key": KEYS["bob"]}).status_code for _ in range(6)]
    assert bob == [202] * 5 + [429]  # bob's own window (the key came from the file)


def test_idempotency_keys_are_scoped_per_user(guarded: tuple[SupervisorProcess, Backend]) -> None:
    process, slice_ = guarded
    key = {"idempotency-key": f"order-{uuid.uuid4().hex}"}
    first = post(process.url, bearer("alice"), **key)
    assert first.status_code == 202
    again = post(process.url, bearer("alice"), **key)
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["idempotent-replayed"] == "true"
    # Another user replaying alice's key, even naming her, gets a task of its own.
    thief = post(process.url, bearer("mallory"), **key, **{"x-user-id": "alice"})
    assert thief.status_code == 202
    assert thief.json()["task_id"] != first.json()["task_id"]
    assert "idempotent-replayed" not in thief.headers
    owners = slice_.query(
        "SELECT user_id FROM {schema}.agent_tasks WHERE idempotency_key = $1",
        key["idempotency-key"],
    )
    assert sorted(row["user_id"] for row in owners) == ["key:alice", "key:mallory"]


def test_x_user_id_is_honoured_from_a_trusted_proxy(tmp_path: Path) -> None:
    """Default trust list (loopback, as uvicorn's): the header counts, also when the
    server already replaced the proxy's address by the X-Forwarded-For client."""
    with backend() as slice_:
        env = {**slice_.env, "FASTAGENTIC_RATE_LIMIT": "2/minute"}
        process = start(tmp_path, "--workers", "1", env=env)
        try:
            process.wait_serving(1, timeout=15)
            direct = [post(process.url, {"x-user-id": "carol"}).status_code for _ in range(3)]
            assert direct == [202, 202, 429]
            forwarded = {"x-user-id": "dave", "x-forwarded-for": "203.0.113.7"}
            via_proxy = [post(process.url, forwarded).status_code for _ in range(3)]
            assert via_proxy == [202, 202, 429]
            # ...and the end client's address is what anonymous callers are counted by.
            stranger = [
                post(process.url, {"x-forwarded-for": "198.51.100.9"}).status_code for _ in range(3)
            ]
            assert stranger == [202, 202, 429]
            owners = slice_.query("SELECT DISTINCT user_id FROM {schema}.agent_tasks")
            assert {row["user_id"] for row in owners} == {
                "user:carol",
                "user:dave",
                "ip:198.51.100.9",
            }
        finally:
            process.stop()
