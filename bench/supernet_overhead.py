"""Does the supernet cost more than the child it runs?

For several random architectures, times forward + backward of the supernet with that
architecture against the stand-alone child holding the same weights, on the same batch,
alternating the two in one run (random order per round) so machine noise hits both alike. The
supernet's architecture view is rebuilt on every call, as in a search where every step samples a
new architecture. Prints a table and, last, one JSON line.

    python bench/supernet_overhead.py [--archs 6] [--rounds 7] [--batch 32] [--size 48]

Goal: median ratio supernet / child <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch

from supernet.network import SuperNet, build_child
from supernet.space import SearchSpace
from supernet.training import resolve_device


def fwd_bwd(fn, x: torch.Tensor, target: torch.Tensor, device: torch.device) -> float:
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(fn(x), target)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def view_build_ms(net: SuperNet, rng: random.Random, count: int = 300) -> float:
    """Mean time to build the view of a new architecture (the supernet's only extra work)."""
    space = net.space
    archs = [
        tuple(rng.randrange(space.num_choices) for _ in range(space.layers)) for _ in range(count)
    ]
    start = time.perf_counter()
    for arch in archs:
        net._views.clear()
        net.view(arch)
    return 1e3 * (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--channels", type=int, default=36)
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    space = SearchSpace(channels=args.channels, num_classes=args.classes)
    net = SuperNet(space).to(device).train()
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    target = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)

    def supernet_call(arch):
        def run(inp):
            net._views.clear()  # a new architecture every step, as in a search
            return net(inp, arch)

        return run

    rows = []
    for _ in range(args.archs):
        arch = tuple(rng.randrange(space.num_choices) for _ in range(space.layers))
        child = build_child(space, arch, supernet=net).to(device).train()
        calls = {"supernet": supernet_call(arch), "child": child}
        for fn in calls.values():  # warm-up
            fwd_bwd(fn, x, target, device)
        times: dict[str, list[float]] = {"supernet": [], "child": []}
        ratios = []
        for _ in range(args.rounds):
            order = list(calls)
            rng.shuffle(order)
            took = {name: fwd_bwd(calls[name], x, target, device) for name in order}
            net.zero_grad(set_to_none=True)
            child.zero_grad(set_to_none=True)
            for name, t in took.items():
                times[name].append(t)
            ratios.append(took["supernet"] / took["child"])
        rows.append(
            {
                "arch": list(arch),
                "supernet_ms": 1e3 * statistics.median(times["supernet"]),
                "child_ms": 1e3 * statistics.median(times["child"]),
                "ratio": statistics.median(ratios),
            }
        )
        r = rows[-1]
        print(
            f"{' '.join(map(str, arch)):<26} supernet {r['supernet_ms']:8.1f} ms   "
            f"child {r['child_ms']:8.1f} ms   ratio {r['ratio']:.3f}",
            flush=True,
        )
    median_ratio = statistics.median(r["ratio"] for r in rows)
    view_ms = view_build_ms(net, rng)
    print(f"building an architecture view: {view_ms:.2f} ms", flush=True)
    print(
        json.dumps(
            {
                "bench": "supernet_overhead",
                "device": str(device),
                "threads": torch.get_num_threads(),
                "batch": args.batch,
                "size": args.size,
                "channels": args.channels,
                "rounds": args.rounds,
                "median_ratio": round(median_ratio, 4),
                "view_build_ms": round(view_ms, 3),
                "goal": 1.05,
                "met": median_ratio <= 1.05,
                "archs": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
