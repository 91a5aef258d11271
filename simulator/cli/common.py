"""What every `sim` command reads the same way: a cluster (a built-in case or a file), layer and
batch settings, profiles, and the footer line that says where each device kind's compute comes from."""

from __future__ import annotations

import argparse
from pathlib import Path

from profiler.cluster import Cluster, load_cluster
from profiler.errors import InputError
from profiler.profile import load_profile
from profiler.scenarios import SCENARIOS, scenario


def add_command(sub, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with its examples."""
    return sub.add_parser(name, help=help, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_cluster_flags(parser: argparse.ArgumentParser) -> argparse._MutuallyExclusiveGroup:
    """--case NAME or --cluster FILE, one of them required (``cluster_of`` reads them); the group,
    for a command that also takes a third way in."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--case", help="a built-in scenario: " + ", ".join(SCENARIOS) + " (or 1-5)")
    where.add_argument("--cluster", type=Path, help="a cluster JSON file (see `sim cases --export`)")
    return where


def cluster_of(args: argparse.Namespace) -> tuple[Cluster, str]:
    if args.case is not None:
        item = scenario(args.case)
        return item.build(), item.name
    cluster = load_cluster(args.cluster)
    return cluster, cluster.name


def check_settings(args: argparse.Namespace) -> None:
    for n in args.layers:
        if n < 1:
            raise InputError(f"--layers: {n} is not a positive layer count")
    for b in args.batch:
        if b < 1:
            raise InputError(f"--batch: {b} is not a positive batch size")


def load_profiles(paths: list[Path], cluster: Cluster) -> tuple:
    """The profiles given, one per device kind, each for a kind the cluster has."""

    profiles = tuple(load_profile(path) for path in paths)
    for path, profile in zip(paths, profiles):
        if profile.device_kind not in cluster.gpu_kinds:
            raise InputError(f"{path}: profile of {profile.device_kind!r}, which cluster {cluster.name!r} does not "
                             f"have (its kinds: {', '.join(cluster.gpu_kinds)})")
    kinds = [p.device_kind for p in profiles]
    if len(set(kinds)) != len(kinds):
        raise InputError(f"--profile: two profiles of one device kind ({', '.join(kinds)})")
    return profiles


def compute_sources(cluster: Cluster, profiles: tuple, paths: list[Path]) -> str:
    """The footer line: which kinds' compute is measured, which comes from the datasheet model."""
    measured = {p.device_kind: (p, path) for p, path in zip(profiles, paths)}
    parts = []
    for kind in cluster.gpu_kinds:
        if kind in measured:
            profile, path = measured[kind]
            parts.append(f"{kind} measured ({path}: {profile.device_name}, {profile.dtype}, {profile.date})")
        else:
            parts.append(f"{kind} from its datasheet (GEMM efficiency calibrated to docs/facts.md §2)")
    return "compute: " + "; ".join(parts) + "; network: the cluster's figures"
