"""Clusters: several machines (nodes) planned as one, for runtimes that serve across nodes (vLLM + Ray).

A cluster is a :class:`~planner.core.records.Hardware` whose ``nodes`` holds its machines in node
order; its ``gpus`` are theirs, renumbered 0..n-1 in that order, and its RAM and disk are their
sums. Two ways to get one:

* ``--nodes N --hardware PROFILE``: N copies of one machine profile (:func:`replicate`);
* ``--hardware NAME`` where ``NAME`` is a cluster profile, ``clusters/NAME.toml`` in a profile
  folder (the same folders as machine profiles, :func:`planner.hardware.profiles.profile_dirs`),
  for mixed nodes. The format::

      description = "2 HGX H100 + 1 HGX A100 over 400 Gb/s InfiniBand"   # required
      network_bandwidth = 50_000_000_000    # required, bytes/s between two nodes, one direction

      [[nodes]]                              # one table per kind of node, in node order
      profile = "8x-h100-sxm-80gb"           # required: a machine profile name
      count = 2                              # optional, default 1

      [sources]
      network_bandwidth = "where the figure comes from"

Only the standard library is imported here (``fitcheck`` must start fast).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from planner.core.errors import UsageError
from planner.core.records import Hardware
from planner.hardware.profiles import load_profile, profile_dirs

# One NDR InfiniBand port per node, 400 Gb/s = 50 GB/s one direction (NVIDIA ConnectX-7 datasheet).
# HGX hosts usually carry one such port per GPU (8 x 400 Gb/s on an AWS p5: EC2 P5 instances page,
# "3200 Gbps EFA"), so this is the floor of what a GPU cluster has between two nodes.
DEFAULT_NETWORK_BANDWIDTH = 50_000_000_000
CLUSTER_FOLDER = "clusters"
MAX_NODES = 1024


def replicate(node: Hardware, count: int, *, network_bandwidth: int | None = None, name: str | None = None) -> Hardware:
    """``count`` copies of the machine ``node`` as one cluster.

    Raises:
        UsageError: ``count`` below 1 or above :data:`MAX_NODES`, or ``node`` is itself a cluster.
    """
    return combine((node,) * _count(count), network_bandwidth=network_bandwidth,
                   name=name or (f"{count}x {node.name}" if count > 1 else node.name))


def combine(nodes: tuple[Hardware, ...], *, network_bandwidth: int | None = None, name: str, description: str = "",
            sources: dict[str, str] | None = None) -> Hardware:
    """The machines ``nodes`` (in node order) as one cluster named ``name``."""
    if not nodes:
        raise UsageError("a cluster needs at least one node")
    inner = next((n for n in nodes if n.nodes), None)
    if inner is not None:
        raise UsageError(f"{inner.name} is already a cluster of {len(inner.nodes)} nodes; it cannot be a node of {name}",
                         hint="--nodes cannot be combined with a cluster profile, which names its nodes itself")
    if len(nodes) == 1 and network_bandwidth is None:
        return nodes[0]
    gpus = tuple(dataclasses.replace(g, index=i) for i, g in enumerate(g for n in nodes for g in n.gpus))
    bandwidth = network_bandwidth if network_bandwidth is not None else DEFAULT_NETWORK_BANDWIDTH
    src = dict(sources or {})
    src.setdefault("network_bandwidth", f"assumption: {bandwidth / 1e9:g} GB/s between nodes (one 400 Gb/s NDR InfiniBand port)"
                   if network_bandwidth is None else "given")
    kinds = sorted({n.name for n in nodes})
    return Hardware(
        name=name,
        source="cluster",
        gpus=gpus,
        ram_total=sum(n.ram_total for n in nodes),
        ram_free=sum(n.ram_free for n in nodes),
        disk_free=min(n.disk_free for n in nodes),
        cache_disk_free=min(n.cache_disk_free for n in nodes),
        cpu_count=sum(n.cpu_count or 0 for n in nodes) or None,
        description=description or f"{len(nodes)} nodes ({', '.join(kinds)})",
        sources=src,
        nodes=tuple(nodes),
        network_bandwidth=bandwidth,
    )


def load(name: str, *, nodes: int | None = None) -> Hardware:
    """``--hardware name`` (a machine or cluster profile) with ``--nodes nodes`` applied.

    Raises:
        UsageError: no such profile, a malformed cluster file, or ``--nodes`` with a cluster profile.
    """
    path = _cluster_path(name)
    if path is not None:
        if nodes is not None and nodes != 1:
            raise UsageError(f"--nodes {nodes} cannot be combined with the cluster profile {name!r}",
                             hint="a cluster profile names its nodes itself")
        return load_cluster_file(path)
    machine = load_profile(name)
    return replicate(machine, nodes) if nodes is not None else machine


def load_cluster_file(path: Path) -> Hardware:
    """Read one cluster profile (the format is in the module docstring).

    Raises:
        UsageError: the file is unreadable or malformed (naming the file and the field).
    """
    def fail(field: str, problem: str) -> UsageError:
        return UsageError(f"cluster profile {path}: field {field!r} {problem}",
                          hint="fix the file (see the format in planner/hardware/cluster.py) or remove it")

    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cluster profile {path} cannot be read: {e}") from e
    known = {"description", "network_bandwidth", "nodes", "sources"}
    for key in data:
        if key not in known:
            raise fail(key, f"is not a known field (known: {', '.join(sorted(known))})")
    if not isinstance(data.get("description"), str):
        raise fail("description", "must be a string")
    bw = data.get("network_bandwidth")
    if not isinstance(bw, int) or isinstance(bw, bool) or bw < 1:
        raise fail("network_bandwidth", "must be a positive integer (bytes/s)")
    tables = data.get("nodes")
    if not isinstance(tables, list) or not tables:
        raise fail("nodes", "must be one or more [[nodes]] tables")
    machines: list[Hardware] = []
    for i, table in enumerate(tables):
        if not isinstance(table, dict) or set(table) - {"profile", "count"}:
            raise fail(f"nodes[{i}]", "must be a table with 'profile' and optional 'count'")
        if not isinstance(table.get("profile"), str):
            raise fail(f"nodes[{i}].profile", "must be a machine profile name")
        count = table.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_NODES:
            raise fail(f"nodes[{i}].count", f"must be an integer from 1 to {MAX_NODES}")
        machines += [load_profile(table["profile"])] * count
    if len(machines) > MAX_NODES:
        raise fail("nodes", f"name more than {MAX_NODES} nodes")
    sources = data.get("sources", {})
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        raise fail("sources", "must be a table of strings")
    return combine(tuple(machines), network_bandwidth=bw, name=path.stem, description=data["description"], sources=sources)


def _count(count: int) -> int:
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_NODES:
        raise UsageError(f"--nodes {count!r} must be an integer from 1 to {MAX_NODES}")
    return count


def _cluster_path(name: str) -> Path | None:
    key = str(name).strip().lower()
    found = None
    for folder in profile_dirs():
        path = folder / CLUSTER_FOLDER / f"{key}.toml"
        if path.is_file():
            found = path  # a later folder overrides an earlier one
    return found
