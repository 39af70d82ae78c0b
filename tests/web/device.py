"""An Apple Wallet device, simulated: it talks to the web service the way Wallet does.

It installs a pass from its ``.pkpass`` (reading ``webServiceURL`` and ``authenticationToken``
from the verified pass.json, as a device does), registers for updates, asks which passes changed
since its last ``lastUpdated`` tag, fetches changed passes with ``If-Modified-Since`` and checks
each one the way Wallet complains about in its log: a pass without ``Last-Modified``, a changed
list with an unchanged tag, a listed pass that did not change.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from passkit_stamps.apple.verify import VerifiedPass, verify_pkpass


class ProtocolViolation(AssertionError):
    """The server did something a real device would log as an error."""


@dataclass
class InstalledPass:
    pass_type_identifier: str
    serial: str
    token: str
    web_service_url: str
    data: bytes
    verified: VerifiedPass
    last_modified: str | None = None


@dataclass
class Device:
    """One device library with its push token and installed passes."""

    client: httpx.AsyncClient
    ca: Any  # the root certificate passes must chain to
    device_id: str = field(default_factory=lambda: secrets.token_hex(16))
    push_token: str = field(default_factory=lambda: secrets.token_hex(32))
    passes: dict[str, InstalledPass] = field(default_factory=dict)
    last_updated: str | None = None

    # -- raw requests (every path relative to webServiceURL, like the device) -------------------

    def _url(self, base: str, path: str) -> str:
        # The client's base URL is the server; webServiceURL's path carries the mount prefix.
        return urlsplit(base).path.rstrip("/") + path

    async def register_raw(
        self,
        base: str,
        pass_type: str,
        serial: str,
        *,
        authorization: str | None,
        body: bytes | None = None,
        device_id: str | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        path = f"/v1/devices/{device_id or self.device_id}/registrations/{pass_type}/{serial}"
        content = body if body is not None else json.dumps({"pushToken": self.push_token}).encode()
        return await self.client.post(self._url(base, path), content=content, headers=headers)

    async def unregister_raw(
        self, base: str, pass_type: str, serial: str, *, authorization: str | None
    ) -> httpx.Response:
        headers = {"Authorization": authorization} if authorization is not None else {}
        path = f"/v1/devices/{self.device_id}/registrations/{pass_type}/{serial}"
        return await self.client.delete(self._url(base, path), headers=headers)

    async def serials_raw(
        self, base: str, pass_type: str, since: str | None, *, device_id: str | None = None
    ) -> httpx.Response:
        path = f"/v1/devices/{device_id or self.device_id}/registrations/{pass_type}"
        params = {"passesUpdatedSince": since} if since is not None else None
        return await self.client.get(self._url(base, path), params=params)

    async def pass_raw(
        self,
        base: str,
        pass_type: str,
        serial: str,
        *,
        authorization: str | None,
        if_modified_since: str | None = None,
        method: str = "GET",
    ) -> httpx.Response:
        headers = {}
        if authorization is not None:
            headers["Authorization"] = authorization
        if if_modified_since is not None:
            headers["If-Modified-Since"] = if_modified_since
        return await self.client.request(
            method, self._url(base, f"/v1/passes/{pass_type}/{serial}"), headers=headers
        )

    async def log(self, base: str, messages: list[str]) -> httpx.Response:
        return await self.client.post(self._url(base, "/v1/log"), json={"logs": messages})

    # -- Wallet's behaviour -------------------------------------------------------------------

    def install(self, data: bytes) -> InstalledPass:
        """Add a pass from its .pkpass bytes (as when the holder taps "Add")."""
        verified = verify_pkpass(data, ca=self.ca)
        pj = verified.pass_json
        installed = InstalledPass(
            pass_type_identifier=pj["passTypeIdentifier"],
            serial=pj["serialNumber"],
            token=pj["authenticationToken"],
            web_service_url=pj["webServiceURL"],
            data=data,
            verified=verified,
        )
        if installed.web_service_url.rstrip("/").endswith("/v1"):
            raise ProtocolViolation("webServiceURL ends in /v1: the device appends it")
        self.passes[installed.serial] = installed
        return installed

    async def register(self, installed: InstalledPass) -> int:
        response = await self.register_raw(
            installed.web_service_url,
            installed.pass_type_identifier,
            installed.serial,
            authorization=f"ApplePass {installed.token}",
        )
        if response.status_code not in (200, 201):
            raise ProtocolViolation(f"register answered {response.status_code}")
        return response.status_code

    async def unregister(self, installed: InstalledPass) -> int:
        response = await self.unregister_raw(
            installed.web_service_url,
            installed.pass_type_identifier,
            installed.serial,
            authorization=f"ApplePass {installed.token}",
        )
        self.passes.pop(installed.serial, None)
        return response.status_code

    async def changed_serials(self, base: str, pass_type: str) -> list[str]:
        """Ask for serials updated since the last tag; check the answer like Wallet does."""
        response = await self.serials_raw(base, pass_type, self.last_updated)
        if response.status_code == 204:
            return []
        if response.status_code != 200:
            raise ProtocolViolation(f"serials answered {response.status_code}")
        body = response.json()
        if set(body) != {"serialNumbers", "lastUpdated"}:
            raise ProtocolViolation(f"serials body has keys {sorted(body)}")
        if not isinstance(body["lastUpdated"], str):
            raise ProtocolViolation("lastUpdated is not a string")
        serials = body["serialNumbers"]
        if not isinstance(serials, list) or not all(isinstance(s, str) for s in serials):
            raise ProtocolViolation("serialNumbers is not a list of strings")
        if serials and body["lastUpdated"] == self.last_updated:
            raise ProtocolViolation("serials changed but lastUpdated did not move")
        self.last_updated = body["lastUpdated"]
        return list(serials)

    async def fetch(self, installed: InstalledPass) -> httpx.Response:
        """Fetch the latest version, conditionally; on 200 the new pass replaces the old."""
        response = await self.pass_raw(
            installed.web_service_url,
            installed.pass_type_identifier,
            installed.serial,
            authorization=f"ApplePass {installed.token}",
            if_modified_since=installed.last_modified,
        )
        if response.status_code == 200:
            if "last-modified" not in response.headers:
                raise ProtocolViolation("pass response without Last-Modified")
            if response.headers["content-type"] != "application/vnd.apple.pkpass":
                raise ProtocolViolation(f"pass content type {response.headers['content-type']}")
            verified = verify_pkpass(response.content, ca=self.ca)
            installed.data = response.content
            installed.verified = verified
            installed.last_modified = response.headers["last-modified"]
        elif response.status_code == 304:
            if installed.last_modified is None:
                raise ProtocolViolation("304 to a request without If-Modified-Since")
        else:
            raise ProtocolViolation(f"pass answered {response.status_code}")
        return response

    async def sync(self, base: str, pass_type: str) -> dict[str, bytes]:
        """What a push triggers: list changed serials, fetch each; return what changed."""
        changed: dict[str, bytes] = {}
        had_tag = self.last_updated is not None
        for serial in await self.changed_serials(base, pass_type):
            installed = self.passes.get(serial)
            if installed is None:
                continue
            before = installed.verified.pass_json
            response = await self.fetch(installed)
            if response.status_code == 200:
                if had_tag and installed.verified.pass_json == before:
                    raise ProtocolViolation(f"serial {serial} listed but its pass is unchanged")
                changed[serial] = response.content
        return changed
