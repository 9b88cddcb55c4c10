"""A no-change `dvc repro` with every output present: how long it takes, and proof that it re-hashes
nothing -> bench/results/repro_nochange.json.

    python bench/repro_nochange.py                      # in the repo root (it must be up to date)
    python bench/repro_nochange.py --clone [--rev REV]  # in a throwaway clone of REV (default HEAD)

Timing: `dvc repro` through the CLI, as a user runs it, `--repeats` times (median and all).

Re-hashing: DVC reads a file's content only to hash it, and every such read goes through dvc-data's
`HashStreamFile` (dvc_data/hashfile/hash.py: `file_md5` -> `fobj_md5`); a file is hashed when its
entry in DVC's state database (keyed by inode, mtime and size, in the site cache dir) is missing or
stale (`hash_file` -> `_hash_file`). One extra `dvc repro` runs in a Python process that wraps both
and counts the files hashed and the bytes read; it must be 0 and 0. A control run of the same with
an empty state database (DVC_SITE_CACHE_DIR pointed at a new folder) shows the counter at work:
every dep and output file is hashed again, and how long that takes.

Read-only on the repo it measures: it refuses to start unless `dvc status` says everything is up to
date (so `dvc repro` runs no stage), and it checks that dvc.lock is unchanged afterwards. --clone
makes the clone the way a teammate sharing this machine's cache would: `git clone`, `dvc cache dir
--local <the repo's cache>`, `dvc checkout` (links from the cache, no copy where the filesystem
links).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UP_TO_DATE = "Data and pipelines are up to date."


def env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1", **extra)


def run(cmd: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env(**extra), check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(repo: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return run([str(BIN / "dvc"), *args], repo, **extra)


def ran_stages(stdout: str) -> list[str]:
    return [line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")]


def count_hashes(out: Path) -> None:
    """In the repo's folder: `dvc repro` in this process, with dvc-data's hashing wrapped; the files
    hashed (by filesystem: `local` is the repo's files, `memory` the directory manifests DVC
    serialises in memory to hash a folder's tree) and the bytes read go to `out`."""
    from dvc_data.hashfile import hash as h

    hashed: list[dict] = []
    read = [0]

    orig_hash_file = h._hash_file

    def counted_hash_file(path, fs, name, callback=None, info=None):
        value, meta = orig_hash_file(path, fs, name, callback=callback, info=info)
        hashed.append({"path": str(path), "fs": fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0], "size": meta.size})
        return value, meta

    def counting(cls):
        orig = cls.read

        def read_counted(self, n=-1):
            chunk = orig(self, n)
            read[0] += len(chunk)
            return chunk

        cls.read = read_counted

    h._hash_file = counted_hash_file  # looked up by hash_file at each call
    counting(h.HashStreamFile)
    counting(h.Dos2UnixHashStreamFile)  # its own read, not the parent's

    from contextlib import redirect_stdout
    from io import StringIO

    from dvc.cli import main

    buf = StringIO()
    start = time.perf_counter()
    with redirect_stdout(buf):
        rc = main(["repro"])
    seconds = time.perf_counter() - start
    out.write_text(json.dumps({"rc": rc, "seconds": seconds, "hashed": hashed, "bytes_read": read[0], "stdout": buf.getvalue()}))


def summary(result: dict, repo: Path) -> dict:
    """Files DVC hashed, split into the repo's files (deps and outputs on disk) and the in-memory
    directory manifests; bytes_read counts every byte any DVC hash read, whatever the path."""
    local = [f for f in result["hashed"] if f["fs"] in ("local", "file")]
    memory = [f for f in result["hashed"] if f not in local]
    return {
        "repo_files_hashed": len(local),
        "repo_bytes_hashed": sum(f["size"] or 0 for f in local),
        "manifests_hashed_in_memory": len(memory),
        "manifest_bytes": sum(f["size"] or 0 for f in memory),
        "bytes_read_by_any_hash": result["bytes_read"],
        "examples": [os.path.relpath(f["path"], repo) for f in local[:5]],  # relative: a committed result names no machine path
    }


def instrumented(repo: Path, **extra: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "count.json"
        run([sys.executable, str(Path(__file__).resolve()), "--count-hashes", str(out)], repo, **extra)
        result = json.loads(out.read_text())
    assert result["rc"] == 0, result["stdout"]
    result["stages_run"] = ran_stages(result.pop("stdout"))
    return result


def clone(src: Path, rev: str, dst: Path) -> Path:
    run(["git", "clone", "-q", str(src), str(dst)], dst.parent)
    run(["git", "checkout", "-q", rev], dst)
    cache = dvc(src, "cache", "dir").stdout.strip() or str(src / ".dvc" / "cache")
    dvc(dst, "cache", "dir", "--local", cache)
    dvc(dst, "checkout", "-q")
    return dst


def outputs_size(repo: Path) -> dict:
    """Files and bytes DVC tracks as outputs of the run (dvc.lock)."""
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    n, size = 0, 0
    for st in lock["stages"].values():
        for o in st.get("outs", []):
            n += o.get("nfiles", 1)
            size += o.get("size", 0)
    return {"stages": len(lock["stages"]), "output_files": n, "output_bytes": size}


def machine() -> dict:
    from importlib.metadata import version

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "dvc": version("dvc"),
        "dvc_data": version("dvc-data"),
        "note": "2 CPU cores shared with other jobs; one local disk (repo, DVC cache and /tmp on the same filesystem)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=ROOT)
    ap.add_argument("--clone", action="store_true", help="measure a throwaway clone of --repo at --rev, outputs linked from its cache")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-control", action="store_true", help="skip the control run with an empty state database")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "repro_nochange.json")
    ap.add_argument("--count-hashes", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.count_hashes:
        return count_hashes(args.count_hashes)

    src = args.repo.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="repro-nochange-")) if args.clone else None
    try:
        repo = clone(src, args.rev, tmp / "repo") if tmp else src
        rev = run(["git", "rev-parse", "--short", "HEAD"], repo).stdout.strip()
        status = dvc(repo, "status").stdout.strip()
        if status != UP_TO_DATE:
            raise SystemExit(f"{repo}: `dvc status` is not clean, so `dvc repro` would run stages; not measuring:\n{status}")
        lock = (repo / "dvc.lock").read_text()

        start = time.perf_counter()
        warm = dvc(repo, "repro")  # apart from the figures: DVC's first use of a repo (its index) costs more
        first_s = round(time.perf_counter() - start, 3)
        assert ran_stages(warm.stdout) == [], warm.stdout
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            proc = dvc(repo, "repro")
            times.append(round(time.perf_counter() - start, 3))
            assert ran_stages(proc.stdout) == [], proc.stdout
        start = time.perf_counter()
        dvc(repo, "status")
        status_s = round(time.perf_counter() - start, 3)

        counted = instrumented(repo)
        assert counted["stages_run"] == [], counted
        rehashed = summary(counted, repo)
        control = None
        if not args.no_control:
            with tempfile.TemporaryDirectory(prefix="dvc-site-cache-") as site:
                cold = instrumented(repo, DVC_SITE_CACHE_DIR=site)
            assert cold["stages_run"] == [], cold
            control = {
                "what": "the same instrumented `dvc repro` with an empty state database (DVC_SITE_CACHE_DIR=a new folder)",
                "in_process_repro_seconds": round(cold["seconds"], 3),
                **summary(cold, repo),
            }
        assert (repo / "dvc.lock").read_text() == lock, "dvc.lock changed"

        result = {
            "what": "no-change `dvc repro` with every output present (all stages skipped)",
            "repo": f"a throwaway clone at {args.rev}, outputs checked out from its DVC cache" if tmp else "the working checkout",
            "rev": rev,
            **outputs_size(repo),
            "repeats": args.repeats,
            "repro_seconds": {"median": statistics.median(times), "all": times, "first_untimed_warmup": first_s},
            "status_seconds": status_s,
            "target_seconds": 3.0,
            "within_target": statistics.median(times) <= 3.0,
            "rehashed": {
                "in_process_repro_seconds": round(counted["seconds"], 3),
                **rehashed,
                "how": "a `dvc repro` run in-process with dvc_data.hashfile.hash._hash_file (called on a state-database miss) and HashStreamFile.read (every byte any DVC hash reads) wrapped",
            },
            "control_empty_state": control,
            "machine": machine(),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        if rehashed["repo_files_hashed"] or rehashed["bytes_read_by_any_hash"] != rehashed["manifest_bytes"]:
            raise SystemExit(f"re-hashed on a no-change repro: {rehashed}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
