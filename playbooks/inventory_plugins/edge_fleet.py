"""Ansible inventory plugin `edge_fleet`: the fleet as the control plane knows it (GET /v1/devices, every page).

Hosts are device ids; groups come from GPU class, site, labels and channel; host variables carry the enrolled
connection and what the device reported (docs/ansible.md, "The fleet inventory"). It only reads: it never changes
a device, and it never invents a connection the device was not enrolled with. It follows the answer's
`Link: <...>; rel="next"` pages (RFC 8288) on the URL it was given: only the link's query is taken, so the token
never goes to another host.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from typing import Any
from urllib.error import HTTPError
from urllib.parse import parse_qsl, urlencode, urlparse

from ansible.errors import AnsibleParserError
from ansible.module_utils.urls import open_url
from ansible.plugins.inventory import BaseInventoryPlugin

DOCUMENTATION = r"""
name: edge_fleet
short_description: Edge devices enrolled with the edge-orchestrator control plane
description:
  - Reads C(GET {url}/v1/devices), following its C(Link rel="next") pages, and makes one host per device.
  - "Groups: C(gpu_<class>), C(site_<site>), C(label_<key>_<value>), C(channel_<channel>); characters outside
    [A-Za-z0-9_] become C(_)."
  - "Host variables: the enrolled connection (ansible_host, ansible_port, ansible_user, ansible_connection,
    ansible_python_interpreter), edge_gpu_class, edge_labels, edge_channel, edge_presence, edge_hardware and
    edge_models (name, version, health)."
  - "A device reached through its tunnel (enrolled with connection C(tunnel), or every device with
    C(connection: tunnel)) gets ansible_connection C(ssh) and an ansible_ssh_common_args ProxyCommand
    C(edgectl --url URL tunnel open DEVICE ssh --stdio): ssh goes through the control plane to the device's
    exposed C(ssh) service. edgectl authenticates with EDGECTL_TOKEN (or its saved login), never this file's token."
options:
  plugin:
    description: Marks this file as an edge_fleet inventory source.
    required: true
    choices: [edge_fleet]
  url:
    description: Base URL of the control plane's REST API.
    required: true
    env:
      - name: EDGE_FLEET_URL
  token:
    description: Bearer token for the control plane.
    env:
      - name: EDGE_FLEET_TOKEN
  selector:
    description: Only the devices this selector picks (k=v,k2=v2,gpu_class=C).
  channel:
    description: Only devices on this channel (mqtt or ansible).
  page_size:
    description: Devices asked for per request (1 to 1000); the control plane's default (500) when unset.
    type: int
  timeout:
    description: Seconds to wait for the control plane.
    type: float
    default: 30
  validate_certs:
    description: Verify the control plane's TLS certificate.
    type: bool
    default: true
  connection:
    description:
      - How hosts are reached. C(enrolled) is each device's enrolled connection (C(tunnel) among them);
        C(tunnel) reaches every device through its tunnel, whatever it was enrolled with.
    choices: [enrolled, tunnel]
    default: enrolled
  edgectl:
    description: The edgectl command a tunnel's ProxyCommand runs (a path, when it is not on PATH).
    default: edgectl
"""

EXAMPLES = r"""
# fleet.yml
plugin: edge_fleet
url: http://127.0.0.1:8080
selector: site=factory-a
channel: ansible
# connection: tunnel     # every device over ssh through its tunnel (edgectl tunnel open DEVICE ssh --stdio)
"""

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_NEXT = re.compile(r"""<([^>]*)>\s*;[^,]*?\brel\s*=\s*"?next"?""", re.IGNORECASE)
MAX_PAGES = 10_000  # 10 million devices at 1,000 a page: past this, a server is leading the plugin in circles
_CONNECTION_VARS = {
    "host": "ansible_host",
    "port": "ansible_port",
    "user": "ansible_user",
    "connection": "ansible_connection",
    "python": "ansible_python_interpreter",
}


def group_name(*parts: str) -> str:
    return _UNSAFE.sub("_", "_".join(parts))


def next_query(link_header: str | None) -> dict[str, str] | None:
    """The query of the `rel="next"` link of a `Link` header (RFC 8288), or None on the last page."""
    match = _NEXT.search(link_header or "")
    return dict(parse_qsl(urlparse(match.group(1)).query)) if match else None


def device_groups(device: dict[str, Any]) -> list[str]:
    """The groups one device belongs to."""
    labels = device.get("labels") or {}
    groups = []
    if device.get("gpu_class"):
        groups.append(group_name("gpu", device["gpu_class"]))
    if labels.get("site"):
        groups.append(group_name("site", labels["site"]))
    groups += [group_name("label", key, value) for key, value in sorted(labels.items())]
    if device.get("channel"):
        groups.append(group_name("channel", device["channel"]))
    return groups


def through_tunnel(device: dict[str, Any], connection: str) -> bool:
    """Whether ssh reaches `device` through its tunnel: every device with `connection: tunnel`, else those enrolled
    with the connection `tunnel`."""
    return connection == "tunnel" or (device.get("ansible") or {}).get("connection") == "tunnel"


def tunnel_vars(device_id: str, edgectl: str, url: str) -> dict[str, Any]:
    """ssh to the device through its tunnel: edgectl's `tunnel open ... --stdio` as the ProxyCommand. Every word is
    quoted for the shell ssh runs it with, and the option is one word for ansible, which splits the arguments."""
    command = shlex.join([edgectl, "--url", url, "tunnel", "open", device_id, "ssh", "--stdio"])
    return {"ansible_connection": "ssh", "ansible_ssh_common_args": "-o " + shlex.quote(f"ProxyCommand={command}")}


def device_vars(device: dict[str, Any], tunnel: tuple[str, str] | None = None) -> dict[str, Any]:
    """The host variables of one device. With `tunnel` (edgectl, the control plane's URL) it is reached through its
    tunnel: its enrolled address, port and connection play no part, its user and interpreter still do."""
    reported = device.get("reported") or {}
    out: dict[str, Any] = {
        "edge_gpu_class": device.get("gpu_class"),
        "edge_labels": device.get("labels") or {},
        "edge_channel": device.get("channel"),
        "edge_presence": device.get("presence"),
        "edge_hardware": device.get("hardware"),
        "edge_models": [
            {"name": m.get("name"), "version": m.get("version"), "health": m.get("health")}
            for m in reported.get("models") or []
        ],
    }
    for field, var in _CONNECTION_VARS.items():
        value = (device.get("ansible") or {}).get(field)
        if value is not None and (tunnel is None or field in ("user", "python")):
            out[var] = value
    if tunnel is not None:
        out |= tunnel_vars(str(device["id"]), *tunnel)
    return out


class InventoryModule(BaseInventoryPlugin):
    NAME = "edge_fleet"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith((".yml", ".yaml"))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        for device in self._fetch():
            self._add_device(device)

    def _devices_url(self) -> str:
        base = str(self.get_option("url") or "").rstrip("/")
        parsed = urlparse(base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise AnsibleParserError(f"edge_fleet: url must be an http(s) URL of the control plane, not {base!r}")
        return f"{base}/v1/devices"

    def _first_query(self) -> dict[str, str]:
        query = {"selector": str(self.get_option("selector") or "")}
        if self.get_option("page_size"):
            query["limit"] = str(self.get_option("page_size"))
        return {key: value for key, value in query.items() if value}

    def _fetch(self) -> list[dict[str, Any]]:
        devices = [device for page in self._pages() for device in page]
        channel = self.get_option("channel")
        return [d for d in devices if not channel or d.get("channel") == channel]

    def _pages(self) -> Iterator[list[dict[str, Any]]]:
        """Every page of the fleet, following `Link: <...>; rel="next"` on the configured URL."""
        base = self._devices_url()
        query: dict[str, str] | None = self._first_query()
        for _ in range(MAX_PAGES):
            if query is None:
                return
            url = base + (f"?{urlencode(query)}" if query else "")
            devices, link = self._read_page(url)
            yield devices
            following = next_query(link)
            if following == query or not devices:
                return  # a link that does not move on, or an empty page: nothing more to read
            query = following
        raise AnsibleParserError(f"edge_fleet: {base} kept naming a next page after {MAX_PAGES} pages")

    def _read_page(self, url: str) -> tuple[list[dict[str, Any]], str | None]:
        headers = {"Accept": "application/json"}
        if self.get_option("token"):
            headers["Authorization"] = f"Bearer {self.get_option('token')}"
        try:
            response = open_url(
                url,
                headers=headers,
                timeout=self.get_option("timeout"),
                validate_certs=self.get_option("validate_certs"),
            )
            body = response.read()
            link = response.headers.get("Link")
        except HTTPError as exc:
            if exc.code in (401, 403):
                raise AnsibleParserError(
                    f"edge_fleet: the control plane refused to list the fleet ({exc.code}): set the `token` option "
                    "or EDGE_FLEET_TOKEN to a token that may read it (a viewer's is enough)"
                ) from exc
            raise AnsibleParserError(f"edge_fleet: cannot read the fleet from {url}: {exc}") from exc
        except Exception as exc:  # urllib, socket and SSL errors alike: all mean "cannot read the fleet"
            raise AnsibleParserError(f"edge_fleet: cannot read the fleet from {url}: {exc}") from exc
        try:
            devices = json.loads(body)
        except ValueError as exc:
            raise AnsibleParserError(f"edge_fleet: {url} did not answer JSON: {exc}") from exc
        if not isinstance(devices, list) or not all(isinstance(d, dict) and d.get("id") for d in devices):
            raise AnsibleParserError(f"edge_fleet: {url} did not answer a list of devices")
        return devices, link

    def _add_device(self, device: dict[str, Any]) -> None:
        host = self.inventory.add_host(str(device["id"]))
        for group in device_groups(device):
            self.inventory.add_group(group)
            self.inventory.add_child(group, host)
        tunnel = None
        if through_tunnel(device, str(self.get_option("connection") or "enrolled")):
            tunnel = (str(self.get_option("edgectl") or "edgectl"), str(self.get_option("url")).rstrip("/"))
        for key, value in device_vars(device, tunnel).items():
            self.inventory.set_variable(host, key, value)
