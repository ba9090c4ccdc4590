"""Every role's meta/argument_specs.yml must stay in step with its defaults/main.yml.

For each role that has a defaults file:
- its ``main`` entry point must exist;
- every default must be an option and every option must be a default (internal ``__`` variables
  are neither);
- a literal default must equal the spec's ``default``; a Jinja default must have no ``default``
  in the spec (its description says what it is);
- the literal defaults must pass ansible's own validator for the spec (types, choices, elements);
- the spec holds no Jinja: ansible templates the spec when it validates a role's arguments, so a
  ``{{ ... }}`` in a description is evaluated (and fails where its variables are undefined).

Roles without a defaults file are skipped.
"""

import glob
import os

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ROLES_DIR = os.path.join(ROOT, "roles")
ROLES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROLES_DIR, "*")) if os.path.isdir(p))


def _load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _find(role, folder, name):
    for ext in ("yml", "yaml"):
        path = os.path.join(ROLES_DIR, role, folder, "%s.%s" % (name, ext))
        if os.path.isfile(path):
            return path
    return None


def _is_jinja(value):
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _public(defaults):
    return {k: v for k, v in (defaults or {}).items() if not k.startswith("__")}


def _role_data(role):
    defaults_path = _find(role, "defaults", "main")
    if defaults_path is None:
        pytest.skip("role %s has no defaults/main.yml" % role)
    spec_path = _find(role, "meta", "argument_specs")
    assert spec_path is not None, (
        "roles/%s has defaults/main.yml but no meta/argument_specs.yml; document every public "
        "variable there" % role)
    spec = (_load(spec_path) or {}).get("argument_specs") or {}
    assert "main" in spec, "roles/%s/meta/argument_specs.yml has no 'main' entry point" % role
    return _public(_load(defaults_path)), spec["main"].get("options") or {}


@pytest.mark.parametrize("role", ROLES)
def test_every_default_is_documented(role):
    defaults, options = _role_data(role)
    missing = sorted(set(defaults) - set(options))
    assert not missing, "roles/%s: defaults missing from meta/argument_specs.yml: %s" % (role, ", ".join(missing))


@pytest.mark.parametrize("role", ROLES)
def test_every_option_has_a_default(role):
    defaults, options = _role_data(role)
    extra = sorted(set(options) - set(defaults))
    assert not extra, "roles/%s: argument_specs options not in defaults/main.yml: %s" % (role, ", ".join(extra))
    internal = sorted(k for k in options if k.startswith("__"))
    assert not internal, "roles/%s: internal variables in argument_specs: %s" % (role, ", ".join(internal))


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_match(role):
    defaults, options = _role_data(role)
    wrong = []
    for name in sorted(set(defaults) & set(options)):
        value, option = defaults[name], options[name]
        if _is_jinja(value):
            if "default" in option:
                wrong.append("%s: defaults/main.yml has the Jinja expression %r; the spec must omit "
                             "'default' and say it in the description" % (name, value))
        elif "default" not in option:
            wrong.append("%s: spec has no default, defaults/main.yml has %r" % (name, value))
        elif option["default"] != value or type(option["default"]) is not type(value):
            wrong.append("%s: spec default %r != defaults/main.yml %r" % (name, option["default"], value))
    assert not wrong, "roles/%s:\n  %s" % (role, "\n  ".join(wrong))


@pytest.mark.parametrize("role", ROLES)
def test_options_are_described_and_optional(role):
    _, options = _role_data(role)
    bad = []
    for name, option in sorted(options.items()):
        if not option.get("description"):
            bad.append("%s: no description" % name)
        if "type" not in option:
            bad.append("%s: no type" % name)
        if option.get("type") == "list" and "elements" not in option:
            bad.append("%s: list without elements" % name)
        if option.get("required", False):
            bad.append("%s: required, but it has a default in defaults/main.yml" % name)
    assert not bad, "roles/%s:\n  %s" % (role, "\n  ".join(bad))


def _strings(node, where):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, "%s.%s" % (where, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, "%s[%d]" % (where, index))
    elif isinstance(node, str):
        yield where, node


@pytest.mark.parametrize("role", ROLES)
def test_spec_holds_no_jinja(role):
    _, options = _role_data(role)
    found = ["%s: %r" % (where, text) for where, text in _strings(options, "options") if _is_jinja(text)]
    assert not found, "roles/%s: Jinja in meta/argument_specs.yml (it is templated at run time):\n  %s" % (
        role, "\n  ".join(found))


@pytest.mark.parametrize("role", ROLES)
def test_literal_defaults_pass_the_spec(role):
    defaults, options = _role_data(role)
    literal = {k: v for k, v in defaults.items() if k in options and not _is_jinja(v)}
    result = ArgumentSpecValidator(options).validate(literal, validate_role_argument_spec=True)
    assert not result.error_messages, "roles/%s: %s" % (role, "; ".join(result.error_messages))
    for name, value in literal.items():
        assert result.validated_parameters[name] == value, (
            "roles/%s: %s: the validator turned %r into %r; give the default its spec type"
            % (role, name, value, result.validated_parameters[name]))


def test_validator_rejects_a_value_outside_choices():
    """The spec's choices are live: a bad value fails ansible's own validation."""
    _, options = _role_data("rabbitmq")
    result = ArgumentSpecValidator(options).validate(
        {"rabbitmq_install_source": "pip", "rabbitmq_tls_versions": ["sslv3"]}, validate_role_argument_spec=True)
    text = " ".join(result.error_messages)
    assert "rabbitmq_install_source" in text and "sslv3" in text, result.error_messages
