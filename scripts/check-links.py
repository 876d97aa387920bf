#!/usr/bin/env python3
"""Every relative link in the pages readers quote from points to a file that exists.

    scripts/check-links.py

Reads README.md, results/README.md, bench-client/README.md, patterns/*.md and docs/*.md;
for each Markdown link `[text](target)` whose target is a path (not a URL, not an anchor in
the same page), checks that the path exists relative to the page. Prints each broken link
with its page and line, and exits 1 if there is any.

This is the first half of checking claims (a quoted figure must come from a file): it makes
sure the file is there. Whether the figure is in it is not checked yet.
"""
import glob
import os
import re
import sys

PAGES = ["README.md", "results/README.md", "bench-client/README.md", "patterns/*.md", "docs/*.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def broken_links(root):
    for pattern in PAGES:
        for page in sorted(glob.glob(os.path.join(root, pattern))):
            base = os.path.dirname(page)
            with open(page, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    for target in LINK.findall(line):
                        if target.startswith(("http://", "https://", "mailto:", "#")):
                            continue
                        path = target.split("#", 1)[0]
                        if path and not os.path.exists(os.path.join(base, path)):
                            yield os.path.relpath(page, root), number, target


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    broken = list(broken_links(root))
    for page, number, target in broken:
        print(f"check-links: {page}:{number}: no such file: {target}")
    if broken:
        print(f"check-links: {len(broken)} broken link(s)")
        return 1
    print("check-links: ok (every relative link in the README, results, patterns and docs pages "
          "points to a file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
