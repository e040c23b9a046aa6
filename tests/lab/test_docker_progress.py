"""`docker/lab.sh base` (part of `make docker-demo`) says what debootstrap
does and roughly how long it takes, and shows its progress phase by phase
instead of ~45 silent seconds.  Run with a stand-in debootstrap and docker
on PATH (no network, no root, no engine): the real ones are exercised by
tests/e2e/test_docker_lab.py."""
import os
import pathlib
import subprocess
import tarfile

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB_SH = str(REPO / "docker" / "lab.sh")

# what debootstrap prints ("I: " lines), with pauses in the download phase
FAKE_DEBOOTSTRAP = r"""#!/bin/sh
target=$4
for line in "Retrieving InRelease" "Checking Release signature" \
            "Valid Release signature (key id 4CB50190207B4758A3F73A796ED0E7B82643E131)" \
            "Retrieving Packages" "Validating Packages" \
            "Resolving dependencies of required packages..."; do
    echo "I: $line"
done
for p in libc6 zlib1g python3.11; do
    echo "I: Retrieving $p 1.0"; sleep 0.7; echo "I: Validating $p 1.0"
done
[ -n "${FAIL_AT:-}" ] && { echo "E: Couldn't download packages: $FAIL_AT"; exit 1; }
mkdir -p "$target/etc"
echo 'ID=debian' > "$target/etc/os-release"
for line in "Chosen extractor for .deb packages: dpkg-deb" "Extracting libc6..." \
            "Installing core packages..." "Unpacking required packages..." \
            "Unpacking libc6..." "Configuring required packages..." "Configuring libc6..." \
            "Base system installed successfully."; do
    echo "I: $line"
done
"""

# `docker image inspect` finds nothing; `docker import` is logged
FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$DOCKER_CALLS"
[ "$1" = import ] && exit 0
exit 1
"""


def _run(tmp_path, **env_extra):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("debootstrap", FAKE_DEBOOTSTRAP), ("docker", FAKE_DOCKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    cache = tmp_path / "cache"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", ULB_CACHE=str(cache),
               DOCKER=str(bin_dir / "docker"), DOCKER_CALLS=str(tmp_path / "docker.calls"),
               ULB_PROGRESS_EVERY="1", **env_extra)
    env.pop("ULB_BASE", None)
    p = subprocess.run([LAB_SH, "base"], capture_output=True, text=True, env=env, timeout=60)
    return p, cache


def test_debootstrap_says_what_and_how_long_and_shows_progress(tmp_path):
    p, cache = _run(tmp_path)
    assert p.returncode == 0, p.stderr
    err = p.stderr
    assert "lab.sh: building the base image with debootstrap --variant=minbase " \
           "--include=python3,python3-venv,iproute2,procps bookworm:" in err
    assert "about 40 MB from http://deb.debian.org/debian, usually 45 s to 2 minutes; " \
           "made once, then cached in" in err
    phases = [line.split(": ", 2)[2] for line in err.splitlines()
              if line.startswith("lab.sh:   debootstrap (")]
    # each phase once, in order, and within the 2 s download phase a line with its step
    names = [ph.split(": ")[0] for ph in phases]
    firsts = [ph for i, ph in enumerate(names) if ph not in names[:i]]
    assert firsts == ["downloading and checking packages", "extracting packages",
                      "unpacking packages", "configuring packages"], err
    assert any(ph.startswith("downloading and checking packages: Retrieving ")
               or ph.startswith("downloading and checking packages: Validating ")
               for ph in phases), err
    assert "lab.sh: debootstrap done in " in err
    # and the base image was made: the tarball (cached) and `docker import`
    (tar,) = cache.glob("base-bookworm-*.tar")
    with tarfile.open(tar) as t:
        assert "./etc/os-release" in t.getnames()
    assert not list(cache.glob("rootfs.*"))
    calls = (tmp_path / "docker.calls").read_text()
    assert f" {tar} userlb-base:bookworm" in calls and calls.splitlines()[-1].startswith("import")


def test_debootstrap_failure_shows_its_log(tmp_path):
    p, cache = _run(tmp_path, FAIL_AT="python3.11")
    assert p.returncode != 0
    assert "E: Couldn't download packages: python3.11" in p.stderr
    assert p.stderr.rstrip().endswith("lab.sh: debootstrap failed")
    assert not list(cache.glob("*.tar")) and not list(cache.glob("rootfs.*"))
