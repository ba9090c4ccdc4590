"""Make the repository importable as ``ansible_collections.warren.rabbitmq``.

The collection lives at the repository root. Modules import their helpers as
``ansible_collections.warren.rabbitmq.plugins.module_utils...``, so the tests need the repo
reachable under that package path. ``make collection`` creates the symlink; this file creates
it too, so a bare ``pytest tests/unit`` works.
"""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
LINK = os.path.join(COLLECTIONS, "ansible_collections", "warren", "rabbitmq")

if not os.path.exists(LINK):
    os.makedirs(os.path.dirname(LINK), exist_ok=True)
    os.symlink(ROOT, LINK)

if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

# The collection's AMQP client package (roles/amqp_client/files/warren_amqp), importable as
# `warren_amqp` the way hosts get it through PYTHONPATH=/usr/local/lib/warren/python.
AMQP_CLIENT_FILES = os.path.join(ROOT, "roles", "amqp_client", "files")
if AMQP_CLIENT_FILES not in sys.path:
    sys.path.insert(0, AMQP_CLIENT_FILES)
