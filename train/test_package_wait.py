"""Tests of package_wait.py against real child processes:
/usr/bin/python3 -m unittest discover -s train -p 'test_*.py'"""
import os
import subprocess
import sys
import tempfile
import time
import unittest

from package_wait import wait_for_package


class WaitForPackage(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.run = os.path.join(self.dir.name, "run.jsonl")

    def tearDown(self):
        self.dir.cleanup()

    def child(self, code):
        return subprocess.Popen([sys.executable, "-c", code, self.run])

    def test_a_run_that_dies_fails_the_wait_promptly(self):
        # Exits with an error and is not reaped (a zombie, as run.sh's background job is).
        child = self.child("import sys, time; time.sleep(0.2); sys.exit(1)")
        start = time.monotonic()
        with self.assertRaisesRegex(RuntimeError, rf"pid {child.pid}\) ended without writing .*run\.jsonl\.done"):
            wait_for_package(self.run, pid=child.pid, timeout=30, poll=0.05)
        self.assertLess(time.monotonic() - start, 5)
        self.assertIsNone(child.returncode, "the child was still unreaped while the wait noticed its end")
        child.wait()

    def test_a_run_that_finishes_ends_the_wait(self):
        child = self.child("import sys, time; time.sleep(0.3); open(sys.argv[1], 'w').write('x'); open(sys.argv[1] + '.done', 'w')")
        wait_for_package(self.run, pid=child.pid, timeout=30, poll=0.05)
        self.assertTrue(os.path.exists(self.run + ".done"))
        child.wait()

    def test_without_a_pid_the_wait_is_bounded(self):
        start = time.monotonic()
        with self.assertRaisesRegex(RuntimeError, r"did not appear within 0\.3 s"):
            wait_for_package(self.run, timeout=0.3, poll=0.05)
        self.assertLess(time.monotonic() - start, 3)


if __name__ == "__main__":
    unittest.main()
