"""The collection declares what it uses: every other collection named by FQCN in the shipped
roles, playbooks and plugins is a dependency in galaxy.yml and is listed in requirements.yml, and
build_ignore keeps the repository's own tooling and example inventories out of the tarball."""

import fnmatch
import os
import re

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHIPPED = ("roles", "playbooks", "plugins")
# ansible.builtin ships with ansible-core; warren.rabbitmq is this collection.
IMPLICIT = {"ansible.builtin", "ansible.legacy", "warren.rabbitmq"}
# namespace.collection.plugin; only names of collections that exist count (file names such as
# prometheus.yml.j2 or Python's urllib.parse.quote look the same).
FQCN = re.compile(r"(?<![\w.])([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*")


def known_collections():
    """Every collection the pinned `ansible` package bundles (the universe a name can come from)."""
    import ansible_collections  # the ansible package's bundle, in .venv

    return {f"{ns}.{c}" for base in ansible_collections.__path__ for ns in os.listdir(base)
            if os.path.isdir(os.path.join(base, ns))
            for c in os.listdir(os.path.join(base, ns)) if os.path.isdir(os.path.join(base, ns, c))}


def _galaxy():
    with open(os.path.join(ROOT, "galaxy.yml")) as f:
        return yaml.safe_load(f)


def used_collections():
    known = known_collections()
    found = {}
    for top in SHIPPED:
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, top)):
            if "__pycache__" in dirpath:
                continue
            for name in files:
                if not name.endswith((".yml", ".yaml", ".j2", ".py")):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        if line.lstrip().startswith("#") or "import " in line:
                            continue
                        for ns, coll in FQCN.findall(line):
                            fq = f"{ns}.{coll}"
                            if fq in known and fq not in IMPLICIT:
                                found.setdefault(fq, os.path.relpath(path, ROOT))
    return found


def test_the_scan_finds_the_known_users():
    """Guards the scan itself: the rabbitmq role is known to call community.rabbitmq and
    community.crypto; a regex that found nothing would make the next test pass vacuously."""
    used = used_collections()
    assert {"community.rabbitmq", "community.crypto"} <= set(used)


def test_every_used_collection_is_a_galaxy_dependency():
    deps = set(_galaxy().get("dependencies") or {})
    missing = {fq: where for fq, where in used_collections().items() if fq not in deps}
    assert not missing, f"used but not in galaxy.yml dependencies (first use shown): {missing}"


def test_requirements_yml_lists_every_galaxy_dependency():
    with open(os.path.join(ROOT, "requirements.yml")) as f:
        listed = {c["name"] for c in yaml.safe_load(f)["collections"]}
    missing = set(_galaxy().get("dependencies") or {}) - listed
    assert not missing, f"galaxy.yml dependencies missing from requirements.yml: {sorted(missing)}"


@pytest.mark.parametrize("path", [
    "inventories/production/group_vars/all/vault.yml",
    "inventories/lab/hosts.yml",
    "tools/dashboards/build.py",
    "ansible.cfg",
    "playbooks/ansible.cfg",
    "requirements.txt",
    ".ansible-lint",
    ".yamllint",
    ".config/molecule/config.yml",
    "molecule/cluster/molecule.yml",
    "tests/unit/test_packaging.py",
])
def test_build_ignore_keeps_repository_tooling_out(path):
    patterns = _galaxy()["build_ignore"]
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    assert any(fnmatch.fnmatch(p, pat) for p in prefixes for pat in patterns), \
        f"{path} would be shipped in the collection tarball"


@pytest.mark.parametrize("path", ["playbooks/site.yml", "roles/rabbitmq/defaults/main.yml", "README.md",
                                  "plugins/modules/definitions.py"])
def test_build_ignore_keeps_what_users_need(path):
    patterns = _galaxy()["build_ignore"]
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    assert not any(fnmatch.fnmatch(p, pat) for p in prefixes for pat in patterns)
