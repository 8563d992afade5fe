"""Who is calling: the user that owns tasks and idempotency keys, and the rate-limit counter.

In order:

1. ``Authorization: Bearer <key>`` (or ``X-API-Key``) when API keys are
   configured (``FASTAGENTIC_API_KEYS`` / ``_API_KEYS_FILE``, as SHA-256
   hashes): the key's user. An unknown key is 401. Without configured keys a
   presented key proves nothing and is ignored.
2. ``X-User-Id``, only from a trusted proxy (``FASTAGENTIC_TRUSTED_PROXIES``,
   by default the servers' own ``FORWARDED_ALLOW_IPS`` list): the proxy
   authenticated the user. From anyone else the header is ignored.
3. Otherwise the client address. Anonymous callers share a bounded set of
   rate-limit counters (the address hashed into ``ANON_BUCKETS``; IPv6 by
   /64), so no caller can grow Redis by rotating names or addresses.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec

from app.errors import HTTPError
from app.http import Request

ANON_BUCKETS = 65_536
MAX_USER_ID = 128
_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
_UNAUTHORIZED = [(b"www-authenticate", b'Bearer realm="fastagentic"')]


class Identity(msgspec.Struct, frozen=True):
    user: str  # owns tasks and Idempotency-Keys
    rate_key: str  # the rate-limit counter (bounded keyspace)
    how: str  # "api-key", "proxy" or "anonymous"


def hash_key(key: str) -> str:
    """SHA-256 of the key's bytes as sent (header values are decoded as latin-1)."""
    return hashlib.sha256(key.encode("latin-1", "replace")).hexdigest()


def parse_api_keys(text: str, source: str) -> dict[str, str]:
    """``[NAME:]SHA256HEX`` entries (commas, spaces or lines; ``#`` comments) -> {hash: user}."""
    table: dict[str, str] = {}
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    entries = [entry for line in lines for entry in re.split(r"[\s,]+", line) if entry]
    for number, entry in enumerate(entries, 1):
        name, _, digest = entry.rpartition(":")
        digest = digest.lower()
        if not _HEX.match(digest) or (name and not _NAME.match(name)):
            raise ValueError(
                f"{source}: entry {number} is not NAME:SHA256 (a name of letters, digits"
                " and ._@+- and the key's SHA-256 in 64 hex digits; make one with"
                ' `printf %s "$KEY" | sha256sum`).'
            )
        user = name or digest[:12]
        if table.get(digest, user) != user:
            raise ValueError(f"{source}: entry {number} repeats the key of user {table[digest]!r}.")
        table[digest] = user
    return table


def load_api_keys(inline: str | None, path: str | None) -> dict[str, str]:
    """The configured keys from FASTAGENTIC_API_KEYS and FASTAGENTIC_API_KEYS_FILE."""
    table = parse_api_keys(inline or "", "FASTAGENTIC_API_KEYS")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(
                f"FASTAGENTIC_API_KEYS_FILE={path!r} cannot be read: {exc.strerror}."
            ) from None
        for digest, user in parse_api_keys(text, f"FASTAGENTIC_API_KEYS_FILE={path!r}").items():
            if table.setdefault(digest, user) != user:
                raise ValueError(f"The key of user {user!r} is configured twice.")
    return table


class TrustedProxies:
    """uvicorn's FORWARDED_ALLOW_IPS semantics: addresses, networks, literals or ``*``."""

    def __init__(self, spec: str) -> None:
        entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
        self.everyone = "*" in entries
        self.addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.literals: set[str] = set()
        for entry in entries:
            try:
                if "/" in entry:
                    self.networks.append(ipaddress.ip_network(entry, strict=False))
                else:
                    self.addresses.add(ipaddress.ip_address(entry))
            except ValueError:
                self.literals.add(entry)
        self.trusts = functools.lru_cache(maxsize=4096)(self._trusts)

    def _trusts(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return host in self.literals
        return ip in self.addresses or any(ip in net for net in self.networks)

    def sent(self, request: Request) -> bool:
        """Whether the request reached us through a trusted proxy."""
        if self.everyone:
            return True
        client = request.scope.get("client")
        if not client:
            return False
        host, port = str(client[0]), client[1]
        if len(host) <= 253 and self.trusts(host):
            return True
        # The server (uvicorn's proxy-headers handling, on by default in all three
        # servers) already replaced a trusted peer by the client X-Forwarded-For
        # names, and marks that address with port 0, which no TCP peer has.
        return port == 0 and b"x-forwarded-for" in request.headers


def anonymous_bucket(host: str) -> str:
    """One of ANON_BUCKETS counters for an address; a whole IPv6 /64 is one caller."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        text = host[:256]
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if isinstance(ip, ipaddress.IPv6Address):
            text = str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address)
        else:
            text = str(ip)
    digest = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest()
    return f"anon:{int.from_bytes(digest, 'big') % ANON_BUCKETS}"


class Authenticator:
    """Maps a request to its Identity; raises 401 for an unknown API key."""

    def __init__(self, api_keys: Mapping[str, str], trusted: TrustedProxies) -> None:
        self.api_keys = dict(api_keys)
        self.trusted = trusted

    def identify(self, request: Request) -> Identity:
        key = _presented_key(request)
        if key is not None and self.api_keys:
            user = self.api_keys.get(hash_key(key))
            if user is None:
                raise HTTPError(401, "Unknown API key.", headers=list(_UNAUTHORIZED))
            return Identity(f"key:{user}", f"key:{user}", "api-key")
        claimed = request.header("x-user-id")
        if claimed and self.trusted.sent(request):
            if "\x00" in claimed:
                raise HTTPError(422, "X-User-Id must not contain NUL characters.")
            user = claimed[:MAX_USER_ID]
            digest = hashlib.sha256(user.encode("utf-8", "replace")).hexdigest()[:24]
            return Identity(f"user:{user}", f"user:{digest}", "proxy")
        host = request.client_host
        return Identity(f"ip:{host[:MAX_USER_ID]}", anonymous_bucket(host), "anonymous")


def _presented_key(request: Request) -> str | None:
    auth = request.header("authorization")
    if auth and auth[:7].lower() == "bearer " and auth[7:].strip():
        return auth[7:].strip()
    return request.header("x-api-key") or None
