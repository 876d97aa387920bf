#!/usr/bin/env python3
"""Live heap by allocation site, from a heap profile of a running server: which code holds
the bytes at one moment (say, with 2,000 idle connections open).

    scripts/heap-sites.py massif.out [--frames 3]       # valgrind --tool=massif, last
                                                        # detailed snapshot (vgdb
                                                        # detailed_snapshot FILE)
    scripts/heap-sites.py stacks.txt [--frames 3]       # heaptrack_print -F stacks.txt
                                                        # --flamegraph-cost-type leaked

Each site is named by its innermost frames that are not the allocator or std's containers
(`--frames` of them), so a Vec growing in `HeartbeatWheel::insert` shows as that function.
Bytes are as requested from the allocator (massif) or as counted by heaptrack: glibc adds
8 bytes and rounds each chunk to 16 (32 at least), which RSS includes and this does not.

Recipes (results/memory/*/README.md has the ones used): run scripts/idle-memory.py with
--bin pointing at a wrapper that execs `valgrind --tool=massif --vgdb=yes ... wschat "$@"`
(epoll only: valgrind 3.19 cannot run the io_uring backend) and a long --settle, then
`vgdb --pid=P detailed_snapshot FILE` while the connections are open; or a wrapper running
`heaptrack -o FILE wschat "$@"` (any backend), then `kill -9` the server while they are open
so that everything still allocated counts as "leaked".
"""
import argparse
import re
from collections import defaultdict

# Frames that say how, not who: the allocator, std's containers, closures, thread start-up.
PLUMBING = re.compile(
    r"^(0x[0-9A-F]+: )?(alloc::|core::|std::|<alloc|<core|<std|_RN|realloc|malloc|calloc|"
    r"__rust|__rdl|grow|finish_grow|push|UnknownInlinedFun|alloc |alloc_impl|allocate|"
    r"from_elem|from_slice|from |append|spec_|extend|new_uninitialized|fallible_with_capacity|"
    r"prepare_resize|resize_inner|reserve|hashbrown::|find_or|insert_recursing|split |"
    r"new_internal|\{closure|do_alloc|with_capacity|into |from |insert_at|"
    r"(new|insert|entry|map|replace|take_mut|event) \((library|src/raw|src/lib|connection))")
GENERICS = re.compile(r"<[^<>]*(<[^<>]*(<[^<>]*>[^<>]*)*>[^<>]*)*>")


LEGACY = {"$LT$": "<", "$GT$": ">", "$u20$": " ", "$u7b$": "{", "$u7d$": "}", "$C$": ",",
          "$RF$": "&", "$BP$": "*", "$u27$": "'", "..": "::"}


def short(frame):
    """A readable function name: legacy Rust mangling decoded, hash, address, `<T as Trait>`
    and generic arguments dropped."""
    frame = re.sub(r"^0x[0-9A-F]+: ", "", frame)
    frame = re.sub(r"::h[0-9a-f]{16}\b", "", frame)
    for code, text in LEGACY.items():
        frame = frame.replace(code, text)
    frame = frame.lstrip("_")
    frame = re.sub(r"<([\w:]+) as [\w:]+(<[^<>]*>)?>", r"\1", frame)
    return GENERICS.sub("", frame)[:100]


def sites_from_stack(frames_leaf_first, depth):
    named = [short(f) for f in frames_leaf_first if f and not PLUMBING.match(f)]
    return " <- ".join(named[:depth]) or short(frames_leaf_first[0])


def massif(path, depth):
    lines = open(path).read().splitlines()
    start = max(i for i, l in enumerate(lines) if l.startswith("heap_tree=detailed")) + 1
    sites = defaultdict(int)
    stack = []
    for line in lines[start:]:
        if line.startswith("#-") or line.startswith("snapshot="):
            break
        m = re.match(r"^( *)n(\d+): (\d+) (.*)$", line)
        if not m:
            continue
        depth_here, children, size, desc = len(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
        del stack[depth_here:]
        stack.append(desc)
        if children == 0 and depth_here > 0:
            # The tree's root is the allocation function; each level below is a caller.
            sites[sites_from_stack(stack[1:], depth)] += size
    return sites


def heaptrack(path, depth):
    sites = defaultdict(int)
    for line in open(path):
        stack, _, cost = line.rstrip().rpartition(" ")
        # Root first (flame-graph order), each frame "function (file)".
        frames = [re.sub(r" \(.*?\)$", "", f) for f in stack.split(";")]
        sites[sites_from_stack(frames[::-1], depth)] += int(cost)
    return sites


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile")
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--min-share", type=float, default=0.002,
                    help="hide sites below this share of the total")
    a = ap.parse_args()
    with open(a.profile) as f:
        is_massif = f.readline().startswith("desc:")
    sites = (massif if is_massif else heaptrack)(a.profile, a.frames)
    total = sum(sites.values())
    for site, size in sorted(sites.items(), key=lambda kv: -kv[1]):
        if size >= a.min_share * total:
            print(f"{size:>12,}  {site}")
    print(f"{total:>12,}  total")


if __name__ == "__main__":
    main()
