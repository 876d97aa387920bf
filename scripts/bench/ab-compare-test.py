#!/usr/bin/env python3
"""Tests for scripts/bench/ab-compare.py: the rank-sum statistic on sets whose answer is known,
and that an A/B directory's runs are read in round order. Standard library only; instant."""
import importlib.util
import os
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("ab_compare", os.path.join(HERE, "ab-compare.py"))
ab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ab)


class RankSum(unittest.TestCase):
    def test_the_same_values_are_indistinguishable(self):
        u, pairs, z = ab.rank_sum([1, 2, 3], [1, 2, 3])
        self.assertEqual((u, pairs, z), (4.5, 9, 0.0))

    def test_a_set_wholly_above_the_other_takes_every_pair(self):
        u, pairs, z = ab.rank_sum([10, 11, 12, 13], [1, 2, 3, 4])
        self.assertEqual((u, pairs), (16, 16))
        # n = m = 4: sd = sqrt(16 * 9 / 12), z = 8 / sd.
        self.assertAlmostEqual(z, 8 / 12 ** 0.5)
        self.assertAlmostEqual(ab.rank_sum([1, 2, 3, 4], [10, 11, 12, 13])[2], -z)

    def test_interleaved_sets_land_in_between(self):
        # a is above b in 3 of the 6 pairs (3 > 2, 5 > 2, 5 > 4): no difference.
        self.assertEqual(ab.rank_sum([1, 3, 5], [2, 4])[0], 3)


class Runs(unittest.TestCase):
    def test_runs_are_read_in_round_order_not_name_order(self):
        with tempfile.TemporaryDirectory() as d:
            for name in ("epoll-r2000-10.json", "epoll-r2000-2.json", "epoll-r2000-1.json",
                         "epoll-r1000-3.json", "uring-r2000-1.json"):
                open(os.path.join(d, name), "w").close()
            runs = ab.runs_of(d)
            got = [os.path.basename(p) for p in runs[("epoll", 2000)]]
            self.assertEqual(got, ["epoll-r2000-1.json", "epoll-r2000-2.json", "epoll-r2000-10.json"])
            self.assertEqual(sorted(runs), [("epoll", 1000), ("epoll", 2000), ("uring", 2000)])


if __name__ == "__main__":
    unittest.main()
