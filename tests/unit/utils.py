"""Drive an Ansible module's ``main()`` in-process and catch its result.

ansible-core 2.19 reads module arguments through ``ansible.module_utils.testing.patch_module_args``
(the old trick of setting ``basic._ANSIBLE_ARGS`` by hand no longer carries the serialisation
profile). ``exit_json``/``fail_json`` are replaced by functions that raise, so a test gets the
result dict back as an exception's payload.
"""

import contextlib

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class AnsibleExitJson(Exception):
    """Raised instead of exit_json; ``.result`` is the module's result."""

    def __init__(self, result):
        super().__init__(result)
        self.result = result


class AnsibleFailJson(Exception):
    """Raised instead of fail_json; ``.result`` holds ``msg`` and the rest."""

    def __init__(self, result):
        super().__init__(result.get('msg'))
        self.result = result


def _exit_json(self, **kwargs):
    kwargs.setdefault('changed', False)
    raise AnsibleExitJson(kwargs)


def _fail_json(self, msg=None, **kwargs):
    kwargs['failed'] = True
    kwargs['msg'] = msg
    raise AnsibleFailJson(kwargs)


@contextlib.contextmanager
def module_harness(args, check_mode=False, diff=False):
    args = dict(args)
    if check_mode:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    with patch_module_args(args), \
            pytest.MonkeyPatch.context() as mp:
        mp.setattr(basic.AnsibleModule, 'exit_json', _exit_json)
        mp.setattr(basic.AnsibleModule, 'fail_json', _fail_json)
        yield


def run_ok(main, args, check_mode=False, diff=False):
    """Run ``main`` and return its result; the test fails if the module failed."""
    with module_harness(args, check_mode, diff):
        with pytest.raises(AnsibleExitJson) as exc:
            main()
    return exc.value.result


def run_fail(main, args, check_mode=False, diff=False):
    """Run ``main`` and return its failure result; the test fails if the module succeeded."""
    with module_harness(args, check_mode, diff):
        with pytest.raises(AnsibleFailJson) as exc:
            main()
    return exc.value.result


def load_file(name, path):
    """Import a standalone Python file (a script shipped in a role or a tool) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
