"""`profiler`: measure this machine's compute (`profiler compute`) and its links (`profiler network`),
and write what was measured for the simulator to predict from.

Each handler parses, measures, writes. Progress goes to stderr; exit 0 ok, 2 bad input (one line,
no traceback). torch is imported only once a measurement starts.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path

from profiler.errors import ArgumentParser, InputError, NoSolution, run_command
from profiler.files import check_folder, write_atomic
from profiler.gpus import GPU_KINDS, PROFILE_ONLY_KINDS
from profiler.links import DEFAULT_SIZES, read_regions
from profiler.model import ACTIVATIONS, POSITIONS, PRECISIONS, PRESETS, ModelSpec, model_named

EXAMPLES = {
    "compute": "examples:\n  profiler compute -o cpu.json                      # gpt-small on this CPU, < 3 min\n"
               "  profiler compute --device cuda --model gpt3-xl --dtype bf16 -o h100-bf16.json\n"
               "  profiler compute --d-model 1024 --heads 16 --ffn 4096 --seq 512 --micro-batch 2 --tp 1 -o p.json\n"
               "  sim predict --cluster my-cluster.json --profile h100.json",
    "network": "examples:\n  profiler network --spawn 4 -o local-cluster.json\n"
               "  torchrun --nnodes 8 --nproc-per-node 8 ... -m profiler.cli network --backend nccl \\\n"
               "      --regions regions.json -o c.json\n"
               "  sim predict --cluster c.json",
}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="profiler", description="Measure compute and links for Tasklet's simulator.",
                     epilog="examples:\n  profiler compute -o cpu.json\n  profiler network --spawn 2 -o local.json",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    compute = sub.add_parser("compute", help="time a GPT layer shard, the embedding, the head and the optimizer",
                             epilog=EXAMPLES["compute"], formatter_class=argparse.RawDescriptionHelpFormatter)
    compute.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    compute.add_argument("--model", metavar="NAME|FILE",
                         help=f"a model: one of {', '.join(PRESETS)}, or a model file (model/1) (default: gpt3-xl on "
                              "CUDA, gpt-small on CPU)")
    for flag in ("--d-model", "--heads", "--ffn", "--seq", "--vocab", "--kv-heads"):
        compute.add_argument(flag, type=int, help="a shape of your own instead of --model (give all but --vocab and "
                                                  "--kv-heads)")
    compute.add_argument("--activation", choices=ACTIVATIONS, help="with a shape of your own: the FFN's (default gelu)")
    compute.add_argument("--position", choices=POSITIONS, help="with a shape of your own: positions (default learned)")
    compute.add_argument("--micro-batch", type=int, nargs="+", default=[1, 2, 4], help="sequences (default 1 2 4)")
    compute.add_argument("--tp", type=int, nargs="+", default=[1, 2, 4, 8],
                         help="tensor-parallel shards of a layer to time (default 1 2 4 8)")
    compute.add_argument("--dtype", choices=PRECISIONS, help="default fp16 on CUDA, fp32 on CPU")
    compute.add_argument("--threads", type=int, help="torch intra-op threads on a CPU (default: torch's)")
    compute.add_argument("--dropout", type=float, default=0.1,
                         help="dropout probability in the modules (default 0.1, Megatron's; 0 for what "
                              "`executor run` trains)")
    compute.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    compute.add_argument("--repeats", type=int, default=10, help="timed runs; the median is kept (default 10)")
    compute.add_argument("--kind", help="the device kind name clusters use (default: from the device's name)")
    compute.add_argument("-o", "--output", type=Path, required=True, help="the profile to write (profile/1)")
    compute.add_argument("--quiet", action="store_true", help="no progress on stderr")
    network = sub.add_parser("network", help="measure every rank pair's latency and bandwidth into a cluster file",
                             epilog=EXAMPLES["network"], formatter_class=argparse.RawDescriptionHelpFormatter)
    network.add_argument("--spawn", type=int, help="run N local ranks (a quick check on one machine)")
    network.add_argument("--backend", choices=("gloo", "nccl"), default="gloo", help="default gloo")
    network.add_argument("--sizes", type=int, nargs="+", help="message sizes in bytes (default 4 KiB .. 16 MiB, x4)")
    network.add_argument("--repeats", type=int, default=5, help="ping-pongs per size; the median is kept (default 5)")
    network.add_argument("--regions", type=Path, help="JSON object host name -> region (default: each host its own)")
    network.add_argument("--name", default="measured", help="the cluster's name (default 'measured')")
    network.add_argument("-o", "--output", type=Path, required=True, help="the cluster file to write")
    network.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def _model(args: argparse.Namespace, cuda: bool) -> ModelSpec:
    """The model to time: --model, or a shape of your own (--d-model --heads --ffn --seq, and
    optionally --vocab --kv-heads --activation --position)."""
    own = {"d_model": args.d_model, "heads": args.heads, "ffn": args.ffn, "seq_len": args.seq}
    options = {"kv_heads": args.kv_heads, "activation": args.activation, "position": args.position}
    given = [key for key, value in own.items() if value is not None]
    if given and args.model:
        raise InputError("give --model or a shape (--d-model --heads --ffn --seq), not both")
    if given and len(given) < len(own):
        missing = [f"--{k.replace('_len', '').replace('_', '-')}" for k, v in own.items() if v is None]
        raise InputError(f"a shape of your own needs {', '.join(missing)} too")
    if not given and any(value is not None for value in options.values()):
        raise InputError("--kv-heads, --activation and --position shape a model of your own: give --d-model --heads "
                         "--ffn --seq too, or put them in a model file for --model")
    for key, value in (own | {"vocab": args.vocab, "kv_heads": args.kv_heads}).items():
        if value is not None and value < 1:
            raise InputError(f"--{key.replace('_len', '').replace('_', '-')} must be positive, got {value}")
    if given:
        model = ModelSpec(name="own", layers=1, vocab=8192 if args.vocab is None else args.vocab, **own,
                          **{key: value for key, value in options.items() if value is not None})
    else:
        model = model_named(args.model or ("gpt3-xl" if cuda else "gpt-small"))
        if args.vocab is not None:
            model = replace(model, vocab=args.vocab)
    for tp in args.tp:
        if tp < 1 or not model.shards(tp):
            raise InputError(f"--tp {tp} does not shard heads {model.heads}, kv heads {model.kv_heads or model.heads}, "
                             f"ffn {model.ffn} and vocab {model.vocab} evenly")
    return model


def cmd_compute(args: argparse.Namespace) -> int:
    cuda = args.device.startswith("cuda")
    if not (args.device == "cpu" or args.device == "cuda" or (cuda and args.device[5:].isdigit()
                                                              and args.device[4] == ":")):
        raise InputError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    for flag, values in (("--micro-batch", args.micro_batch), ("--repeats", [args.repeats])):
        if min(values) < 1:
            raise InputError(f"{flag} must be at least 1, got {min(values)}")
    if args.warmup < 0 or (args.threads is not None and args.threads < 1):
        raise InputError("--warmup must be 0 or more and --threads at least 1")
    if not 0 <= args.dropout < 1:
        raise InputError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.kind is not None and args.kind not in (*GPU_KINDS, *PROFILE_ONLY_KINDS):
        raise InputError(f"--kind {args.kind!r} is no kind a cluster can name (known: "
                         f"{', '.join((*GPU_KINDS, *PROFILE_ONLY_KINDS))})")
    shape = _model(args, cuda).shape()
    check_folder(args.output)
    torch = _torch()
    from profiler.measure import measure_compute

    if cuda and not torch.cuda.is_available():
        raise InputError(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
    if cuda and ":" in args.device and int(args.device[5:]) >= torch.cuda.device_count():
        raise InputError(f"--device {args.device}: this machine has CUDA devices 0..{torch.cuda.device_count() - 1}")
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = None if args.quiet else (lambda text: print(f"[profiler] {text}", file=sys.stderr, flush=True))
    profile = measure_compute(shape, device=args.device, dtype=args.dtype or ("fp16" if cuda else "fp32"),
                              tps=sorted(set(args.tp)), micro_batches=sorted(set(args.micro_batch)),
                              warmup=args.warmup, repeats=args.repeats, kind=args.kind, dropout=args.dropout,
                              progress=progress)
    write_atomic(args.output, json.dumps(profile.to_json(), indent=2) + "\n")
    if not args.quiet:
        print(f"[profiler] wrote {args.output}: {profile.device_kind} ({profile.device_name}), {len(profile.layers)} "
              f"shapes", file=sys.stderr)
    return 0


def cmd_network(args: argparse.Namespace) -> int:
    sizes = sorted(set(args.sizes or DEFAULT_SIZES))
    if min(sizes) < 1 or len(sizes) < 2 or args.repeats < 1:
        raise InputError("--sizes must be positive, at least two different ones, and --repeats at least 1")
    ranks = args.spawn if args.spawn is not None else int(os.environ.get("WORLD_SIZE", "0"))
    if args.spawn is None and "RANK" not in os.environ:
        raise InputError("profiler network runs under torchrun (several hosts) or with --spawn N (this machine)")
    if ranks < 2:
        given = f"--spawn {ranks}" if args.spawn is not None else f"WORLD_SIZE {ranks}"
        raise InputError(f"profiler network needs at least 2 ranks, got {given}")
    regions = read_regions(args.regions) if args.regions else {}
    if args.spawn is not None and regions and socket.gethostname() not in regions:
        raise InputError(f"{args.regions}: no region for this host, {socket.gethostname()!r}")
    if os.environ.get("RANK", "0") == "0":  # rank 0 writes the file
        check_folder(args.output)
    torch = _torch()
    if args.backend == "nccl" and not torch.cuda.is_available():
        raise InputError(f"--backend nccl needs CUDA; this torch ({torch.__version__}) sees no CUDA device")
    from profiler.measure_network import run_network

    progress = None if args.quiet else (lambda text: print(f"[profiler] {text}", file=sys.stderr, flush=True))
    from profiler.spawn import RankFailed

    try:
        cluster_doc = run_network(spawn=args.spawn, backend=args.backend, sizes=sizes, repeats=args.repeats,
                                  regions=regions, name=args.name, progress=progress)
    except RankFailed as err:
        raise NoSolution(str(err)) from None
    if cluster_doc is not None:  # rank 0 writes
        write_atomic(args.output, json.dumps(cluster_doc, indent=2) + "\n")
        if not args.quiet:
            print(f"[profiler] wrote {args.output}: {len(cluster_doc['devices'])} devices", file=sys.stderr)
    return 0


def _torch():
    try:
        import torch
    except ImportError:
        raise InputError("the profiler's measurements need torch: pip install -e '.[torch]'") from None
    return torch


def main(argv: list[str] | None = None) -> int:
    return run_command("profiler", build_parser(), {"compute": cmd_compute, "network": cmd_network}, argv)


if __name__ == "__main__":
    sys.exit(main())
