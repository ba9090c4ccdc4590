# -*- coding: utf-8 -*-
# Copyright: warren contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # Connection options of every warren module that talks to the management API
    # (plugins/module_utils/rabbitmq_api.py, api_argument_spec()).
    DOCUMENTATION = r'''
options:
  url:
    description:
      - Base URL of the management API, for example V(https://rmq1.example.net:15671).
      - A trailing C(/api) is accepted and ignored. Mutually exclusive with O(host), O(port) and O(scheme).
    type: str
  host:
    description: Host of the management API when O(url) is not given. Defaults to V(localhost).
    type: str
  port:
    description: Port of the management API. Defaults to V(15671) for V(https) and V(15672) for V(http).
    type: int
  scheme:
    description: Scheme of the management API. Defaults to V(http).
    type: str
    choices: [http, https]
  login_user:
    description: User for HTTP basic authentication; needs the C(administrator) tag for most tasks.
    type: str
    default: guest
    aliases: [user, username]
  login_password:
    description: Password of O(login_user).
    type: str
    default: guest
    aliases: [password]
  ca_cert:
    description: CA certificate (PEM file on the host running the module) used to verify the API's TLS certificate.
    type: path
    aliases: [cacert]
  client_cert:
    description: Client certificate (PEM) for mutual TLS. Requires O(client_key).
    type: path
  client_key:
    description: Private key (PEM) of O(client_cert).
    type: path
  validate_certs:
    description: Verify the API's TLS certificate. Only set to V(false) in throw-away labs.
    type: bool
    default: true
  request_timeout:
    description: Seconds to wait for one HTTP request.
    type: int
    default: 30
  api_retries:
    description:
      - How many times a transient failure (HTTP 502, 503 or 504, connection refused or reset,
        time-out) is retried, for example while a node restarts. V(0) disables retries.
      - Authentication errors, 4xx answers and TLS errors are never retried.
    type: int
    default: 5
  api_retry_delay:
    description: Seconds between two retries of a transient failure.
    type: float
    default: 2.0
notes:
  - Names (vhosts, users, queues, policies...) are URL-encoded as whole path segments, so the
    vhost V(/) and names such as V(team a/b) work.
  - HTTP answers are mapped to plain messages, for example 401 (wrong credentials), 404 on a vhost
    (the vhost does not exist) and RabbitMQ's own reason for a 400.
'''
