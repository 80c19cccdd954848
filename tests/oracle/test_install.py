"""`make install PREFIX=...`: a game builds against the installed header and
library through pkg-config, links only what the runtime needs (PCRE2 and
SQLite: no libcurl, libzip, libpng, jansson), and the shared library exports
the public API and nothing else."""
import os
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def sh(args, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}"
    return r.stdout


def test_install_and_link_a_game(tmp_path):
    prefix = tmp_path / "prefix"
    sh(["make", "-s", "--no-print-directory", "install", f"PREFIX={prefix}"], cwd=ROOT)
    for f in ("bin/lemonpc", "include/lemonpc.h", "lib/liblemonpc.a", "lib/liblemonpc.so",
              "lib/liblemonpc.so.0", "lib/pkgconfig/lemonpc.pc"):
        assert (prefix / f).exists(), f
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig")}
    flags = sh(["pkg-config", "--cflags", "--libs", "lemonpc"], env=env).split()
    game = tmp_path / "tavern"
    sh(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", ROOT / "examples/tavern/tavern.c",
        *flags, f"-Wl,-rpath,{prefix / 'lib'}", "-o", game], env=env)
    deps = sh(["ldd", game])
    assert "liblemonpc.so.0" in deps
    for lib in ("libcurl", "libzip", "libpng", "libjansson", "libutf8proc"):
        assert lib not in deps, f"the game links {lib}:\n{deps}"
    # the static archive links with the private libraries alone
    static = sh(["pkg-config", "--static", "--libs", "lemonpc"], env=env).split()
    sh(["cc", "-std=c11", ROOT / "examples/tavern/tavern.c", f"-I{prefix / 'include'}",
        prefix / "lib" / "liblemonpc.a", *[f for f in static if f != "-llemonpc"],
        "-o", tmp_path / "tavern-static"])
    # exported: the lemonpc_* API only
    syms = sh(["nm", "-D", "--defined-only", prefix / "lib" / "liblemonpc.so"])
    names = [l.split()[-1] for l in syms.splitlines() if l.strip()]
    assert names and all(re.match(r"lemonpc_", n) for n in names), \
        [n for n in names if not n.startswith("lemonpc_")][:10]
    header = (ROOT / "include" / "lemonpc.h").read_text()
    declared = set(re.findall(r"LEMONPC_API[^;]*?\b(lemonpc_\w+)\s*\(", header, re.S))
    assert declared == set(names), (declared ^ set(names))
