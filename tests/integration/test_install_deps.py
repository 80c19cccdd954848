"""scripts/install_deps.sh against stand-ins for dpkg-query (nothing
installed), apt-get (records its arguments and prints as much as a real
install does) and sudo: `make demo` installs only what it runs, quietly;
`make test` gets the rest; a failing apt shows its own error."""
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install_deps.sh"
TEST_ONLY = {"python3-torch", "python3-pytest", "python3-numpy", "clang", "libcmocka-dev", "cmake"}
DEMO = {"build-essential", "libpcre2-dev", "libsqlite3-dev", "libjansson-dev", "libcurl4-openssl-dev",
        "libmicrohttpd-dev", "python3", "python3-pip"}


def stubs(tmp_path, apt_fails=False):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    calls = tmp_path / "apt-calls"
    files = {
        "dpkg-query": "#!/bin/sh\nexit 1\n",
        "sudo": '#!/bin/sh\nexec "$@"\n',
        "apt-get": f"""#!/bin/sh
echo "$@" >> {calls}
i=0
while [ $i -lt 400 ]; do echo "Selecting previously unselected package lib$i."; i=$((i+1)); done
{'echo "E: Unable to locate package python3-torch" >&2; exit 100' if apt_fails else 'exit 0'}
""",
    }
    for name, text in files.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    return env, calls


def installed(calls):
    line = next(x for x in calls.read_text().splitlines() if x.split()[0] == "install")
    return {w for w in line.split() if not w.startswith("-") and w != "install"}


def test_demo_installs_what_it_runs_quietly(tmp_path):
    env, calls = stubs(tmp_path)
    r = subprocess.run([str(SCRIPT), "--demo"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    pkgs = installed(calls)
    assert DEMO <= pkgs, DEMO - pkgs
    assert not pkgs & TEST_ONLY, pkgs & TEST_ONLY
    out = (r.stdout + r.stderr).splitlines()
    assert len(out) == 1 and out[0].startswith("installing "), out
    assert not list(tmp_path.glob("lemonpc-apt.*")), "the log of a good install is removed"
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    assert "scripts/install_deps.sh --demo" in demo


def test_test_set_has_the_oracles(tmp_path):
    env, calls = stubs(tmp_path)
    r = subprocess.run([str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    pkgs = installed(calls)
    assert (DEMO | TEST_ONLY) <= pkgs
    assert "libopenblas0-openmp" not in pkgs   # it would change the BLAS PyTorch's oracle loads


def test_bench_set_has_the_baseline_blas(tmp_path):
    """The training benchmarks compare with PyTorch on OpenBLAS, never on the
    reference BLAS: `make bench-train` and `make bench-dpo` install it."""
    env, calls = stubs(tmp_path)
    r = subprocess.run([str(SCRIPT), "--bench"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (DEMO | TEST_ONLY | {"libopenblas0-openmp"}) <= installed(calls)
    mk = (ROOT / "Makefile").read_text()
    for target in ("bench-train:", "bench-dpo:"):
        recipe = mk.split("\n" + target, 1)[1].split("\n\n", 1)[0]
        assert "scripts/install_deps.sh --bench" in recipe, target


def test_failing_apt_shows_its_error(tmp_path):
    env, _ = stubs(tmp_path, apt_fails=True)
    r = subprocess.run([str(SCRIPT), "--demo"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1
    assert "E: Unable to locate package" in r.stderr and "apt-get failed" in r.stderr
    assert len(r.stderr.splitlines()) <= 25
