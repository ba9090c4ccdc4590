# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # What the attributes of warren's modules mean; every module states its own support level
    # (full, partial or none) under `attributes:` next to `extends_documentation_fragment`.
    DOCUMENTATION = r'''
options: {}
attributes:
  check_mode:
    description: Runs in check mode (C(--check)) and reports what it would change without changing it.
  diff_mode:
    description: In diff mode (C(--diff)) it returns the state before and after the change it made or would make.
  platform:
    description: The platforms the module runs on.
'''
