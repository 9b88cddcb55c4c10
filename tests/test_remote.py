"""DVC remote storage, round trips on the tiny profile's finished run (real DVC, real remotes):
push from one clone, then a teammate's fresh `git clone` with an empty DVC cache pulls.

- a local-directory remote: the pull leaves nothing to re-run but merge, whose output is not pushed
  (`push: false` in dvc.yaml); `dvc repro` rebuilds it byte for byte and `dvc status` is clean;
- the same through dvc-s3 against moto's S3 server on loopback, credentials in the environment only;
- `dvc pull --run-cache`: what it brings, and what DVC 3.67 can restore with it on another machine.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.dag import clone_run, dvc, git, ran_stages

pytestmark = pytest.mark.slow

MERGED = "models/merged"  # push: false in dvc.yaml
UP_TO_DATE = "Data and pipelines are up to date."


@dataclass(frozen=True)
class Outputs:
    pushed: set[str]  # every object (md5, a folder's .dir manifest and its files) of the outputs `dvc push` sends
    merged: set[str]  # models/merged's objects
    metrics: dict[str, str]  # cache: false outputs (git-tracked metrics and plot tables): path -> md5


def outputs(repo: Path) -> Outputs:
    """Read through DVC's own index: which outputs are cached and pushed, and the objects they use."""
    from dvc.repo import Repo

    pushed, merged, metrics = set(), set(), {}
    with Repo(str(repo)) as r:
        for out in r.index.outs:
            if not out.hash_info or not out.hash_info.value:
                continue
            if not out.use_cache:
                metrics[str(out.def_path)] = out.hash_info.value
                continue
            objs = {out.hash_info.value}
            if out.hash_info.isdir:  # the manifest: [{"md5": ..., "relpath": ...}, ...] in the cache
                manifest = json.loads(Path(out.cache.oid_to_path(out.hash_info.value)).read_text())
                objs |= {entry["md5"] for entry in manifest}
            (pushed if out.can_push else merged).update(objs)
            if str(out.def_path) == MERGED:
                assert not out.can_push, "models/merged must be `push: false` in dvc.yaml"
    return Outputs(pushed, merged, metrics)


def dir_remote_objects(store: Path) -> set[str]:
    """Object ids in a local-directory remote (files/md5/ab/cdef… -> abcdef…)."""
    return {p.parent.name + p.name for p in (store / "files" / "md5").glob("*/*")}


def run_entries(root: Path) -> set[str]:
    """Run-cache entries (runs/<2>/<stage key>/<run hash>) under a cache or a remote's root."""
    return {str(p.relative_to(root)) for p in (root / "runs").glob("*/*/*")}


def pushed_count(proc: subprocess.CompletedProcess) -> int:
    m = re.search(r"(\d+) files? pushed", proc.stdout)
    assert m, proc.stdout
    return int(m.group(1))


def teammate(origin: Path, dst: Path) -> Path:
    """What a teammate does: a plain `git clone`. The remote travels in the committed .dvc/config;
    .dvc/config.local (the origin's cache location, any credential) does not, and the DVC cache is empty."""
    git(dst.parent, "clone", "-q", str(origin), dst.name)
    assert not (dst / ".dvc" / "config.local").exists() and not (dst / ".dvc" / "cache").exists()
    return dst


def assert_only_merged_missing(repo: Path, env: dict | None = None) -> None:
    """After a pull: merge's output is missing (never pushed) and the stages that read it (or files
    in it) see it deleted; every other stage is up to date."""
    status = json.loads(dvc(repo, "status", "--json", env=env).stdout)
    assert status.pop("merge") == [{"changed outs": {MERGED: "not in cache"}}]
    assert "evaluate@finetuned" in status
    for stage, changes in status.items():
        assert len(changes) == 1 and list(changes[0]) == ["changed deps"], (stage, changes)
        for path, change in changes[0]["changed deps"].items():
            assert (path == MERGED or path.startswith(MERGED + "/")) and change == "deleted", (stage, changes)


@dataclass(frozen=True)
class Pushed:
    repo: Path  # the clone that pushed
    store: Path  # the local-directory remote
    push: subprocess.CompletedProcess
    outs: Outputs


@pytest.fixture(scope="module")
def local(dag, tmp_path_factory) -> Pushed:
    """The first run in a clone, its default remote a local directory, committed in .dvc/config
    (what the team shares), and pushed with its run cache."""
    repo = clone_run(dag, tmp_path_factory.mktemp("remote-local") / "origin")
    store = repo.parent / "store"
    dvc(repo, "remote", "add", "-d", "store", str(store))
    git(repo, "commit", "-qm", "DVC remote", "--", ".dvc/config")
    push = dvc(repo, "push", "--run-cache")
    return Pushed(repo, store, push, outputs(repo))


def test_local_remote_round_trip(local, dag, tmp_path):
    outs = local.outs
    # the remote holds exactly the pushed outputs' objects and the run cache: nothing of models/merged
    on_remote = dir_remote_objects(local.store)
    assert on_remote == outs.pushed
    merged_only = outs.merged - outs.pushed  # its config and tokenizer files may equal the adapter's
    assert merged_only and not merged_only & on_remote
    assert pushed_count(local.push) == len(on_remote) + len(run_entries(local.store))

    fresh = teammate(local.repo, tmp_path / "fresh")
    # a plain `dvc pull` takes everything but fails on the output that was never pushed (so the
    # README says `dvc pull --allow-missing`, which the other tests use)
    pull = dvc(fresh, "pull", check=False)
    assert pull.returncode == 1 and MERGED in pull.stderr, pull.stderr
    assert {p.parent.name + p.name for p in (fresh / ".dvc/cache/files/md5").glob("*/*")} == outs.pushed
    assert_only_merged_missing(fresh)

    lock = (fresh / "dvc.lock").read_text()
    repro = dvc(fresh, "repro")
    assert ran_stages(repro) == ["merge"], repro.stdout
    # merge is deterministic: the rebuilt folder has the hash the first run recorded
    assert (fresh / "dvc.lock").read_text() == lock
    merged_lock = next(o for o in yaml.safe_load(lock)["stages"]["merge"]["outs"] if o["path"] == MERGED)
    assert merged_lock["md5"] == next(o for o in dag.lock["stages"]["merge"]["outs"] if o["path"] == MERGED)["md5"]
    assert dvc(fresh, "status").stdout.strip() == UP_TO_DATE
    assert git(fresh, "status", "--porcelain") == ""


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free loopback port, for this module only."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_remote_round_trip(dag, s3_server, tmp_path):
    import boto3

    key_id, secret = f"qa-forge-test-{secrets.token_hex(4)}", secrets.token_hex(20)
    # credentials in the environment only, never in a config file; nothing read from ~/.aws
    env = {
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1")
    s3.create_bucket(Bucket="qa-forge")

    repo = clone_run(dag, tmp_path / "origin")
    dvc(repo, "remote", "add", "-d", "s3store", "s3://qa-forge/dvc")
    dvc(repo, "remote", "modify", "s3store", "endpointurl", s3_server)  # S3-compatible: MinIO, moto, ...
    git(repo, "commit", "-qm", "DVC remote on S3", "--", ".dvc/config")
    push = dvc(repo, "push", env=env)

    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="qa-forge") for o in page.get("Contents", [])]
    assert pushed_count(push) == len(keys)
    on_remote = {k.split("/")[-2] + k.split("/")[-1] for k in keys if k.startswith("dvc/files/md5/")}
    outs = outputs(repo)
    assert on_remote == outs.pushed and not (outs.merged - outs.pushed) & on_remote

    # no secret in any file DVC wrote or git tracks
    config = (repo / ".dvc" / "config").read_text()
    assert "endpointurl" in config and "s3://qa-forge/dvc" in config
    for f in [repo / ".dvc" / "config", repo / ".dvc" / "config.local", repo / "dvc.lock"]:
        text = f.read_text() if f.exists() else ""
        assert key_id not in text and secret not in text, f
    assert subprocess.run(["git", "grep", "-q", "-e", secret, "-e", key_id], cwd=repo, check=False).returncode == 1

    fresh = teammate(repo, tmp_path / "fresh")
    dvc(fresh, "pull", "--allow-missing", env=env)
    assert_only_merged_missing(fresh, env=env)
    for f in [fresh / ".dvc" / "config", fresh / ".dvc" / "config.local"]:
        assert not f.exists() or secret not in f.read_text()


def test_run_cache_pull(local, tmp_path):
    """`dvc pull --run-cache` brings every stage's run history, and `dvc repro` would still re-run
    merge alone (a dry run; test_local_remote_round_trip runs it): the stages whose dvc.lock
    entries match need no run cache, and merge's output was never pushed, so the run cache cannot
    restore it. Nor can it restore any stage on another machine: its entries name every output,
    the cache: false metrics too, and `dvc push` never sends those (they live in git)."""
    fresh = teammate(local.repo, tmp_path / "fresh")
    dvc(fresh, "pull", "--run-cache", "--allow-missing")
    entries = run_entries(local.store)
    assert entries and run_entries(fresh / ".dvc" / "cache") == entries
    # --dry asks the run cache as a real run does, then runs nothing (merge alone: a dry run cannot
    # hash the models/merged that evaluate@finetuned reads, since it never builds it)
    dry = dvc(fresh, "repro", "--dry", "merge")
    assert ran_stages(dry) == ["merge"] and "is cached" not in dry.stdout, dry.stdout

    # A stage without its dvc.lock entry, as after a param change back to a value someone ran:
    # restored from the run cache where the run happened, re-run on the teammate's machine.
    def drop_lock_entry(repo: Path, stage: str) -> None:
        lock = yaml.safe_load((repo / "dvc.lock").read_text())
        del lock["stages"][stage]
        (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))

    metric = local.outs.metrics["metrics/filter.json"]
    assert metric not in dir_remote_objects(local.store)  # the reason: never pushed
    try:
        drop_lock_entry(local.repo, "filter")
        here = dvc(local.repo, "repro", "-s", "filter")
        assert ran_stages(here) == [] and "Stage 'filter' is cached" in here.stdout, here.stdout
        assert yaml.safe_load((local.repo / "dvc.lock").read_text()) == yaml.safe_load(git(local.repo, "show", "HEAD:dvc.lock"))
    finally:
        git(local.repo, "checkout", "--", "dvc.lock")
    drop_lock_entry(fresh, "filter")
    there = dvc(fresh, "repro", "-s", "filter")
    assert ran_stages(there) == ["filter"], there.stdout
    # the same result: the lock entry written again is the committed one (DVC appends it last)
    assert yaml.safe_load((fresh / "dvc.lock").read_text()) == yaml.safe_load(git(fresh, "show", "HEAD:dvc.lock"))
