#!/usr/bin/env python3
"""Tests for scripts/check-claims.py: each case writes a small tree (a README.md and the files
it links to) in a temporary directory, runs the script on it with --root, and checks the exit
status and what the output says. The real tree is never touched.

    scripts/check-claims-test.py        # or: python3 -m unittest scripts/check-claims-test.py

Standard library only; takes well under a second.
"""
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "check-claims.py")


class CheckClaims(unittest.TestCase):
    def run_on(self, readme, files=None):
        """Writes README.md and files ({path: text}) into a fresh tree, runs the check; returns
        (exit status, output)."""
        with tempfile.TemporaryDirectory(prefix="check-claims-test.") as root:
            for path, text in {"README.md": readme, **(files or {})}.items():
                full = os.path.join(root, path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "w", encoding="utf-8") as f:
                    f.write(textwrap.dedent(text))
            r = subprocess.run([sys.executable, SCRIPT, "--root", root], capture_output=True, text=True)
            return r.returncode, r.stdout + r.stderr

    def passes(self, readme, files=None):
        rc, out = self.run_on(readme, files)
        self.assertEqual(rc, 0, out)
        return out

    def fails(self, readme, files=None, *wanted):
        rc, out = self.run_on(readme, files)
        self.assertEqual(rc, 1, out)
        for w in wanted:
            self.assertIn(w, out)
        return out

    RUN = {"results/run.json": '{"cpu_us_per_delivery": 7.3519, "p50_us": 2623, "rate": 12437}\n'}

    def test_a_figure_in_its_file_passes(self):
        out = self.passes("Measured ([run](results/run.json)): 7.35 µs per delivery.\n", self.RUN)
        self.assertIn("1 found in their files", out)

    def test_a_figure_not_in_its_file_fails_naming_page_line_and_file(self):
        self.fails("# Title\n\nMeasured ([run](results/run.json)):\n7.95 µs per delivery.\n", self.RUN,
                   'README.md:4: figure "7.95µs" not found in results/run.json')

    def test_a_missing_linked_file_fails(self):
        self.fails("See [the run](results/gone.json).\n", self.RUN, "README.md:1: no such file: results/gone.json")

    def test_rounding_units_and_separators(self):
        self.passes("From [run](results/run.json): 7.4 µs, 2.6 ms (p50), 12.4k/s, 12,437 and 12 437.\n",
                    self.RUN)
        self.fails("From [run](results/run.json): 2.7 ms.\n", self.RUN, 'figure "2.7ms" not found')

    def test_an_approximate_round_number_matches_at_its_significant_digits(self):
        self.passes("From [run](results/run.json): about 12,000 messages/s.\n", self.RUN)
        self.fails("From [run](results/run.json): 12,000 messages/s.\n", self.RUN, 'figure "12,000" not found')

    def test_code_spans_fenced_code_dates_and_versions_are_not_figures(self):
        self.passes("""\
            Run `--rate 9.99 --duration 5s` with Node 20.11 on 2026-12-06 (commit abc1234f).
            ```
            12.34 µs
            ```
            """)

    def test_a_table_row_without_links_takes_the_caption_links(self):
        readme = """\
            # Results

            Runs: [run](results/run.json).

            | server | µs/delivery |
            |---|---:|
            | a | 7.35 |
            | b | 9.99 |
            """
        self.fails(readme, self.RUN, 'README.md:8: figure "9.99" not found in results/run.json')
        self.passes(readme.replace("9.99", "7.4"), self.RUN)

    def test_a_header_cell_is_not_a_claim(self):
        self.passes("Runs: [run](results/run.json).\n\n| at 9.99 µs | x |\n|---|---|\n| 7.35 | y |\n", self.RUN)

    def test_a_sentence_without_links_takes_its_paragraphs(self):
        self.passes("It took 7.35 µs. The run: [run](results/run.json).\n", self.RUN)

    def test_a_heading_takes_the_links_of_the_block_under_it(self):
        self.passes("# Chat at 7.35 µs\n\nRuns: [run](results/run.json).\n", self.RUN)

    def test_an_unlinked_figure_fails(self):
        self.fails("It took 7.35 µs.\n", None, 'README.md:1: unlinked figure "7.35µs"')

    def test_not_measured_exempts_a_block_or_a_sentence(self):
        self.passes("<!-- not-measured: defaults -->\n| flag | default |\n|---|---|\n| idle | 75 s |\n")
        self.passes("The default is 75 s <!-- not-measured -->. Next.\n")
        self.fails("The default is 75 s <!-- not-measured -->. But it took 7.35 µs.\n", None,
                   'unlinked figure "7.35µs"')

    def test_unverified_is_a_warning_not_a_failure(self):
        out = self.passes("<!-- unverified: data not kept --> It took 7.95 µs.\n")
        self.assertIn('warning: README.md:1: unverified figure "7.95µs"', out)

    def test_a_percentage_computed_from_the_claims_figures_passes(self):
        files = {"results/r.md": "| off | 6.56 |\n| on | 8.74 |\n"}
        self.passes("Costs 8.74 µs against 6.56 µs (33 % more) ([r](results/r.md)).\n", files)
        self.fails("Costs 8.74 µs against 6.56 µs (45 % more) ([r](results/r.md)).\n", files,
                   'figure "45%" not found')

    def test_a_signed_figure_must_be_in_the_file_or_a_difference_of_the_claims(self):
        files = {"results/m.txt": "before 319.7 B, after 271.7 B\n"}
        self.passes("From 319.7 to 271.7 B: -48 B ([m](results/m.txt)).\n", files)
        self.fails("From 319.7 to 271.7 B: -52 B ([m](results/m.txt)).\n", files, 'figure "-52B" not found')
        self.passes("About 3.4x the CPU ([m](results/m.txt)).\n", files)  # a ratio: taken as computed

    def test_a_linked_directory_stands_for_the_text_files_under_it(self):
        files = {"results/run/sub/a.txt": "took 123.456 ms\n", "results/run/b.gz": "9.99\n"}
        self.passes("See [the run](results/run/): 123.5 ms.\n", files)
        self.fails("See [the run](results/run/): 9.99 ms.\n", files, 'figure "9.99ms" not found')


if __name__ == "__main__":
    unittest.main(verbosity=2)
