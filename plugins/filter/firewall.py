# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The firewall role's rules, computed from the inventory and the roles' own port settings.

Documentation: firewall_rules.yml and firewall_allows.yml next to this file.

Every port comes from the role that opens it (the topology filter's broker entries, and
``host_var`` for the monitoring roles), so changing a port in one place moves the firewall with
it. Every source is either a configured network list or the addresses of an inventory group.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.six import string_types

from ansible_collections.warren.rabbitmq.plugins.filter.topology import broker, host_var

# RabbitMQ's own rules (rabbitmq.com/docs/networking): epmd on 4369, inter-node traffic on the
# AMQP port + 20000, and the CLI tools' distribution ports 10000 above that, eleven of them.
EPMD_PORT = 4369
DIST_OFFSET = 20000
CLI_OFFSET = 10000
CLI_PORTS = 11


def _network(value, where):
    try:
        return ipaddress.ip_network(to_native(value).strip(), strict=False)
    except ValueError as exc:
        raise AnsibleFilterError('warren.rabbitmq.firewall: %s: %r is not an IP address or network (%s). '
                                 'Use addresses or CIDR networks such as 10.0.0.0/8.' % (where, value, exc))


def host_addresses(hostname, hostvars):
    """The addresses other hosts see a host's traffic come from.

    ``firewall_address`` (a string or a list) when the inventory sets it, else the host's
    default IPv4 and IPv6 addresses from its facts.
    """
    try:
        hv = hostvars[hostname]
    except KeyError:
        raise AnsibleFilterError('warren.rabbitmq.firewall: %s is in a group but not in hostvars' % hostname)
    explicit = hv.get('firewall_address') if hasattr(hv, 'get') else None
    if explicit:
        values = [explicit] if isinstance(explicit, string_types) else list(explicit)
        return [str(_network(v, 'firewall_address of %s' % hostname).network_address) for v in values]
    facts = hv.get('ansible_facts') or {}
    out = []
    for key in ('default_ipv4', 'default_ipv6'):
        address = (facts.get(key) or {}).get('address')
        if address:
            out.append(address)
    if not out:
        raise AnsibleFilterError(
            'warren.rabbitmq.firewall: no address known for %s. Its facts were not gathered (was it '
            'left out by --limit?) and firewall_address is not set. Gather its facts or set '
            'firewall_address for it in the inventory.' % hostname)
    return out


def _group_addresses(groups, hostvars, names):
    out = []
    for name in names:
        for hostname in groups.get(name) or []:
            for address in host_addresses(hostname, hostvars):
                if address not in out:
                    out.append(address)
    return out


def _sources(nets, groups, hostvars, group_names, where):
    out = []
    for value in nets or []:
        text = str(_network(value, where))
        if text not in out:
            out.append(text)
    for address in _group_addresses(groups, hostvars, group_names or []):
        if address not in out:
            out.append(address)
    return out


def firewall_rules(hostname, groups, hostvars, settings):
    """The accept rules of one host: a list of {name, proto, ports, sources}, in a stable order.

    ``settings`` holds the firewall role's variables: ssh_port, ssh_sources, client_sources,
    client_groups, admin_sources, admin_groups, monitoring_groups, broker_groups.
    """
    if not isinstance(settings, dict):
        raise AnsibleFilterError('warren.rabbitmq.firewall_rules: settings must be a dict, not %r' % (settings,))
    member = set(name for name, hosts in groups.items() if hostname in (hosts or []))
    monitoring_groups = settings.get('monitoring_groups') or []
    broker_groups = settings.get('broker_groups') or []
    admin = _sources(settings.get('admin_sources'), groups, hostvars, settings.get('admin_groups'), 'firewall_admin_sources')
    monitoring = _sources([], groups, hostvars, monitoring_groups, 'monitoring')
    rules = [
        {'name': 'ssh', 'ports': [int(settings.get('ssh_port') or 22)],
         'sources': _sources(settings.get('ssh_sources'), groups, hostvars, [], 'firewall_ssh_sources')},
        {'name': 'node_exporter metrics', 'ports': [int(host_var(hostname, hostvars, 'node_exporter_port'))],
         'sources': monitoring},
    ]

    broker_group = next((g for g in broker_groups if g in member), None)
    if broker_group:
        b = broker(hostname, hostvars, broker_group)
        clients = _sources(settings.get('client_sources'), groups, hostvars, settings.get('client_groups'),
                           'firewall_client_sources')
        client_ports = [b['client_port']]
        if b['amqp_enabled'] and b['amqp_port'] not in client_ports:
            client_ports.append(b['amqp_port'])
        # Only the brokers of this host's own cluster speak Erlang distribution with it.
        peers = [h for g in broker_groups for h in (groups.get(g) or [])
                 if broker(h, hostvars, g)['cluster'] == b['cluster']]
        peer_addresses = []
        for peer in peers:
            for address in host_addresses(peer, hostvars):
                if address not in peer_addresses:
                    peer_addresses.append(address)
        dist = b['amqp_port'] + DIST_OFFSET
        rules += [
            {'name': 'AMQP clients', 'ports': sorted(client_ports), 'sources': clients},
            {'name': 'management API and UI', 'ports': [b['management_port']], 'sources': admin},
            {'name': 'RabbitMQ metrics', 'ports': [b['prometheus_port']], 'sources': monitoring},
            {'name': 'epmd, Erlang distribution and CLI tools (cluster %s only)' % b['cluster'],
             'ports': [EPMD_PORT, dist, '%d-%d' % (dist + CLI_OFFSET, dist + CLI_OFFSET + CLI_PORTS - 1)],
             'sources': peer_addresses},
        ]

    if any(g in member for g in monitoring_groups):
        ui_ports = [int(host_var(hostname, hostvars, 'prometheus_port')),
                    int(host_var(hostname, hostvars, 'alertmanager_port'))]
        if _truthy(host_var(hostname, hostvars, 'grafana_enabled')):
            ui_ports.append(int(host_var(hostname, hostvars, 'grafana_port')))
        internal = [int(host_var(hostname, hostvars, 'alertmanager_cluster_port')),
                    int(host_var(hostname, hostvars, 'canary_listen_port'))]
        if _truthy(host_var(hostname, hostvars, 'webhook_receiver_enabled')):
            internal.append(int(host_var(hostname, hostvars, 'webhook_receiver_port')))
        rules += [
            # Operators' networks and the monitoring hosts; not the admin groups (brokers and the
            # backup runner call the management API, never these UIs).
            {'name': 'Prometheus, Alertmanager and Grafana', 'ports': ui_ports,
             'sources': _merge(_sources(settings.get('admin_sources'), groups, hostvars, [], 'firewall_admin_sources'),
                               monitoring)},
            {'name': 'monitoring hosts among themselves', 'ports': internal, 'sources': monitoring},
            # Alertmanager's cluster gossip (memberlist) uses UDP as well as TCP on that port.
            {'name': 'Alertmanager cluster gossip', 'proto': 'udp', 'ports': internal[:1], 'sources': monitoring},
        ]

    for rule in rules:
        rule.setdefault('proto', 'tcp')
    return [r for r in rules if r['sources']]


def _truthy(value):
    if isinstance(value, string_types):
        return value.strip().lower() in ('1', 'true', 'yes', 'on')
    return bool(value)


def _merge(first, second):
    return first + [s for s in second if s not in first]


def firewall_allows(address, sources):
    """True when an address falls in one of the sources (addresses or CIDR networks)."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(to_native(address).strip())
    except ValueError:
        raise AnsibleFilterError('warren.rabbitmq.firewall_allows: %r is not an IP address' % (address,))
    return any(ip in _network(s, 'sources') for s in sources or [])


def split_families(sources):
    """{'ipv4': [...], 'ipv6': [...]} from a list of addresses and networks."""
    out = {'ipv4': [], 'ipv6': []}
    for s in sources or []:
        net = _network(s, 'sources')
        text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        out['ipv4' if net.version == 4 else 'ipv6'].append(text)
    return out


class FilterModule(object):
    """warren.rabbitmq firewall filters."""

    def filters(self):
        return {
            'firewall_rules': firewall_rules,
            'firewall_allows': firewall_allows,
            'firewall_families': split_families,
        }
