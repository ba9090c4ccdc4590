# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster's topology, computed once from the inventory.

Every role that needs to know where the brokers are (Prometheus, Grafana, the canary, the
drills, the load test, the backups) calls these filters instead of restating the rabbitmq
role's defaults. The only place a default is written is roles/rabbitmq/defaults/main.yml:
this plugin reads that file (relative to itself, so it works from a checkout and from an
installed collection) and lets each host's inventory variables override it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Documentation: brokers.yml and clusters.yml next to this file (one file per filter).

import os

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.module_utils.six import string_types

# The collection's roles, found from this file: <collection>/plugins/filter/topology.py
ROLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'roles')
# roles/rabbitmq/defaults/main.yml: the only place a broker default is written.
DEFAULTS_FILE = os.path.join(ROLES_DIR, 'rabbitmq', 'defaults', 'main.yml')

# The rabbitmq role variables the topology is made of.
TOPOLOGY_VARS = (
    'rabbitmq_address',
    'rabbitmq_node_host',
    'rabbitmq_cluster_name',
    'rabbitmq_tls_enabled',
    'rabbitmq_amqp_enabled',
    'rabbitmq_amqp_port',
    'rabbitmq_amqps_port',
    'rabbitmq_management_plain_enabled',
    'rabbitmq_management_port',
    'rabbitmq_management_tls_port',
    'rabbitmq_prometheus_port',
    'rabbitmq_prometheus_tls_port',
    'rabbitmq_tls_ca_create',
    'rabbitmq_tls_ca_dir',
    'rabbitmq_tls_ca_src',
)

_DEFAULTS_CACHE = {}


def load_defaults(path=None):
    """A role's defaults file (the rabbitmq role's by default), parsed once per file version."""
    path = path or DEFAULTS_FILE
    try:
        st = os.stat(path)
    except OSError as exc:
        raise AnsibleFilterError('warren.rabbitmq topology: cannot read the role defaults %s: %s'
                                 % (path, to_native(exc)))
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _DEFAULTS_CACHE:
        # Ansible's own loader marks the values as trusted templates (role defaults are),
        # so a default such as "{{ inventory_hostname_short }}" can be rendered per host.
        from ansible.parsing.dataloader import DataLoader
        data = DataLoader().load_from_file(path)
        if not isinstance(data, dict):
            raise AnsibleFilterError('warren.rabbitmq topology: %s is not a YAML mapping' % path)
        for old in [k for k in _DEFAULTS_CACHE if k[0] == path]:
            del _DEFAULTS_CACHE[old]
        _DEFAULTS_CACHE[key] = data
    return _DEFAULTS_CACHE[key]


def role_of(name):
    """The collection role that owns a variable, by warren's naming rule (role name prefix)."""
    try:
        roles = [r for r in os.listdir(ROLES_DIR) if os.path.isdir(os.path.join(ROLES_DIR, r))]
    except OSError as exc:
        raise AnsibleFilterError('warren.rabbitmq topology: cannot list the roles in %s: %s' % (ROLES_DIR, to_native(exc)))
    owners = sorted((r for r in roles if name.startswith(r + '_')), key=len, reverse=True)
    if not owners:
        raise AnsibleFilterError('warren.rabbitmq.host_var: %s belongs to none of the roles %s (variables are '
                                 'prefixed with their role name)' % (name, ', '.join(sorted(roles))))
    return owners[0]


def role_defaults(role):
    """The defaults of one of the collection's roles ({} when it has none)."""
    path = os.path.join(ROLES_DIR, role, 'defaults', 'main.yml')
    if role == 'rabbitmq':
        path = DEFAULTS_FILE
    if not os.path.exists(path):
        return {}
    return load_defaults(path)


def _is_template(value):
    return isinstance(value, string_types) and ('{{' in value or '{%' in value)


def _render(value, variables):
    """Render a template string with the given variables (the broker host's view)."""
    from ansible.template import Templar, trust_as_template
    from ansible.parsing.dataloader import DataLoader
    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.template(trust_as_template(value))


class _HostView(object):
    """One broker host's variables: its own (rendered by Ansible's hostvars), else the defaults."""

    def __init__(self, hostname, hostvars, defaults):
        self.hostname = hostname
        self.defaults = defaults
        try:
            self.own = hostvars[hostname]
        except KeyError:
            raise AnsibleFilterError('warren.rabbitmq.brokers: host %s is in the group but not in hostvars' % hostname)
        self._variables = None

    def variables(self):
        """Everything a default may refer to: the defaults, then the host's own variables."""
        if self._variables is None:
            merged = dict(self.defaults)
            raw = getattr(self.own, '_vars', None)  # HostVarsVars keeps the host's unrendered vars here
            merged.update(raw if raw is not None else self.own)
            merged.setdefault('inventory_hostname', self.hostname)
            merged.setdefault('inventory_hostname_short', self.hostname.split('.')[0])
            self._variables = merged
        return self._variables

    def get(self, name):
        if name in self.own:
            value = self.own[name]  # hostvars renders it in the host's context
        elif name in self.defaults:
            value = self.defaults[name]
        else:
            raise AnsibleFilterError('warren.rabbitmq topology: %s is neither set for %s nor a role default'
                                     % (name, self.hostname))
        if _is_template(value):  # a default, or a plain dict of host vars (unit tests)
            value = _render(value, self.variables())
        return value

    def get_bool(self, name):
        try:
            return boolean(self.get(name), strict=True)
        except TypeError as exc:
            raise AnsibleFilterError('warren.rabbitmq.brokers: %s of %s must be a boolean: %s'
                                     % (name, self.hostname, to_native(exc)))

    def get_int(self, name):
        value = self.get(name)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise AnsibleFilterError('warren.rabbitmq.brokers: %s of %s must be a port number, not %r'
                                     % (name, self.hostname, value))

    def get_str(self, name):
        value = self.get(name)
        return '' if value is None else to_native(value)


def _hostport(address, port):
    return ('[%s]:%d' if ':' in address else '%s:%d') % (address, port)


def broker(hostname, hostvars, group='rabbitmq', defaults=None):
    """The topology entry of one broker host."""
    host = _HostView(hostname, hostvars, load_defaults() if defaults is None else defaults)
    tls = host.get_bool('rabbitmq_tls_enabled')
    address = host.get_str('rabbitmq_address') or hostname
    node_host = host.get_str('rabbitmq_node_host') or hostname.split('.')[0]
    amqp_port = host.get_int('rabbitmq_amqp_port')
    amqps_port = host.get_int('rabbitmq_amqps_port')
    client_port = amqps_port if tls else amqp_port
    scheme = 'https' if tls else 'http'
    management_port = host.get_int('rabbitmq_management_tls_port' if tls else 'rabbitmq_management_port')
    prometheus_port = host.get_int('rabbitmq_prometheus_tls_port' if tls else 'rabbitmq_prometheus_port')
    if host.get_bool('rabbitmq_management_plain_enabled'):
        local_url = 'http://127.0.0.1:%d' % host.get_int('rabbitmq_management_port')
    else:
        local_url = 'https://localhost:%d' % host.get_int('rabbitmq_management_tls_port')
    ca_src = ''
    if tls:
        if host.get_bool('rabbitmq_tls_ca_create'):
            ca_dir = host.get_str('rabbitmq_tls_ca_dir')
            ca_src = ca_dir + '/ca.pem' if ca_dir else ''
        else:
            ca_src = host.get_str('rabbitmq_tls_ca_src')
    return {
        'inventory_hostname': hostname,
        'group': group,
        'address': address,
        'node_host': node_host,
        'node': 'rabbit@' + node_host,
        'cluster': host.get_str('rabbitmq_cluster_name'),
        'tls': tls,
        'amqp_enabled': host.get_bool('rabbitmq_amqp_enabled'),
        'amqp_port': amqp_port,
        'amqps_port': amqps_port,
        'client_port': client_port,
        'client_endpoint': _hostport(address, client_port),
        'management_scheme': scheme,
        'management_port': management_port,
        'management_url': '%s://%s' % (scheme, _hostport(address, management_port)),
        'management_local_url': local_url,
        'prometheus_scheme': scheme,
        'prometheus_port': prometheus_port,
        'prometheus_target': _hostport(address, prometheus_port),
        'ca_src': ca_src,
    }


def brokers(groups, hostvars, group='rabbitmq'):
    """The brokers of one inventory group (or several), in inventory order."""
    if isinstance(group, string_types):
        group_names = [group]
    elif isinstance(group, (list, tuple)):
        group_names = list(group)
    else:
        raise AnsibleFilterError('warren.rabbitmq.brokers: group must be a group name or a list of them, not %r' % (group,))
    defaults = load_defaults()
    seen = set()
    out = []
    for name in group_names:
        for hostname in (groups.get(name) or []):
            if hostname in seen:
                continue
            seen.add(hostname)
            out.append(broker(hostname, hostvars, name, defaults))
    return out


def host_var(hostname, hostvars, name):
    """One role variable of another host: its own value, else the owning role's default."""
    return _HostView(hostname, hostvars, role_defaults(role_of(name))).get(name)


def clusters(broker_list):
    """Group a broker list by cluster name: one dict per cluster, sorted by name.

    Each has ``name``, ``brokers`` (in inventory order), ``size``, ``nodes`` (Erlang node
    names), ``tls`` (any broker with TLS) and ``ca_src`` (the first TLS broker's CA file).
    """
    by_name = {}
    for b in broker_list:
        c = by_name.setdefault(b['cluster'], {'name': b['cluster'], 'brokers': [], 'nodes': [], 'tls': False, 'ca_src': ''})
        c['brokers'].append(b)
        c['nodes'].append(b['node'])
        if b['tls']:
            c['tls'] = True
            if not c['ca_src']:
                c['ca_src'] = b['ca_src']
    out = []
    for name in sorted(by_name):
        c = by_name[name]
        c['size'] = len(c['brokers'])
        out.append(c)
    return out


class FilterModule(object):
    """warren.rabbitmq topology filters."""

    def filters(self):
        return {
            'brokers': brokers,
            'clusters': clusters,
            'host_var': host_var,
        }
