"""A py-spy profile, summarised per process and thread: where each spends its samples.

    py-spy record -r 100 -f raw -o profile.raw --threads --subprocesses -- python benchmarks/wsi_throughput.py ...
    python benchmarks/profile_summary.py profile.raw [--only SlideRunner.run _worker] [--top 12]

py-spy's raw output (one line per distinct stack: ``frame;frame;... count``) runs to tens of
MB for a minute of a whole-slide run; this prints a few hundred lines. For every process and
thread with at least ``--min-share`` of the samples: its samples, the functions its samples
pass through most (inclusive) and those they stop in most (self). First, each process's
samples summed over its threads (many light threads, such as the engine's writers, can add
up to a heavy one that no thread shows). ``--only`` keeps the
samples whose stack passes through one of the given names (e.g. the slide call, leaving out
set-up); ``--idle`` in py-spy's command adds waiting threads' samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

_LINE = re.compile(r":\d+\)$")  # "name (file.py:123)" -> "name (file.py)": functions, not lines
# leading frames naming the process (its command line may hold ";") and the thread
_HEADS = re.compile(r'(?:process \d+:"[^"]*";)*(?:thread \([^)]*\)[^;]*;)?')


def read_stacks(path: Path, only: list[str]) -> dict[str, Counter]:
    """``{"process / thread": Counter(stack tuple -> samples)}`` of a py-spy raw file."""
    groups: dict[str, Counter] = defaultdict(Counter)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        heads = _HEADS.match(stack + ";").group(0)
        body = tuple(_LINE.sub(")", f) for f in stack[len(heads) :].split(";") if f)
        if only and not any(name in frame for frame in body for name in only):
            continue
        pids = re.findall(r'process (\d+):"', heads)  # the innermost: the process sampled
        thread = heads[heads.find("thread ") :].rstrip(";") if "thread " in heads else "thread ?"
        groups[f"process {pids[-1]}, {thread}" if pids else thread][body] += int(count)
    return groups


def summarise(groups: dict[str, Counter], top: int, min_share: float) -> list[str]:
    total = sum(sum(stacks.values()) for stacks in groups.values())
    lines = [f"{total} samples in {len(groups)} threads"]
    processes, threads = Counter(), Counter()
    for name, stacks in groups.items():
        process = name.split(", ")[0] if name.startswith("process ") else name
        processes[process] += sum(stacks.values())
        threads[process] += 1
    lines += [
        f"   {process}: {n} samples in {threads[process]} threads ({100 * n / total:.1f} %)"
        for process, n in processes.most_common()
    ]
    for name, stacks in sorted(groups.items(), key=lambda item: -sum(item[1].values())):
        samples = sum(stacks.values())
        if samples < min_share * total:
            continue
        inclusive, leaf = Counter(), Counter()
        for body, count in stacks.items():
            for frame in set(body):
                inclusive[frame] += count
            if body:
                leaf[body[-1]] += count
        lines.append(f"\n== {name}: {samples} samples ({100 * samples / total:.1f} %)")
        trunk = [frame for frame, n in inclusive.items() if n >= 0.99 * samples]  # in (nearly) every sample
        if trunk:
            deepest = max(trunk, key=lambda frame: max(body.index(frame) for body in stacks if frame in body))
            lines.append(f"   all within: {deepest[:150]}")
        lines.append("   inclusive:")
        branches = Counter({frame: n for frame, n in inclusive.items() if frame not in trunk})
        lines += [f"   {100 * n / samples:6.1f} %  {frame[:150]}" for frame, n in branches.most_common(top)]
        lines.append("   self:")
        lines += [f"   {100 * n / samples:6.1f} %  {frame[:150]}" for frame, n in leaf.most_common(top // 2 + 1)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path, help="py-spy record -f raw output")
    parser.add_argument("--only", nargs="*", default=[], help="keep stacks passing through one of these names")
    parser.add_argument("--top", type=int, default=12, help="functions listed per thread")
    parser.add_argument("--min-share", type=float, default=0.01, help="threads with fewer samples are left out")
    args = parser.parse_args()
    if not args.raw.is_file():
        parser.error(f"{args.raw}: no such file (py-spy record -f raw -o {args.raw} ... writes it)")
    print("\n".join(summarise(read_stacks(args.raw, args.only), args.top, args.min_share)))


if __name__ == "__main__":
    main()
