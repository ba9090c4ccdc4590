"""Stand-in for ansible-test's get-pip script (tests/sanity.sh copies it into ansible-test's cache).

ansible-test runs it inside each new sanity virtualenv as
`python get_pip.py [pip options] pip==X --no-setuptools --no-wheel`, with a cleared environment
and PIP_CONFIG_FILE=/dev/null - which makes pip skip every config file, so this machine's
indexes, find-links and CA would be lost. The script:

1. writes this machine's pip settings (PIP_SETTINGS, read from `pip config list` by
   tests/sanity.sh) into the virtualenv's own pip.conf;
2. adds a .pth line that points PIP_CONFIG_FILE at that file whenever it is /dev/null, so the
   later `pip install` runs of ansible-test in this virtualenv use it too;
3. installs pip from the standard library's ensurepip, then the requested pip version.
"""
import ensurepip
import os
import subprocess
import sys
import sysconfig

PIP_SETTINGS = {}  # replaced by tests/sanity.sh

conf = os.path.join(sys.prefix, 'pip.conf')
with open(conf, 'w') as f:
    f.write('[global]\n' + ''.join('%s = %s\n' % kv for kv in sorted(PIP_SETTINGS.items())))
with open(os.path.join(sysconfig.get_paths()['purelib'], 'warren_pip_config.pth'), 'w') as f:
    f.write("import os, sys; os.environ.get('PIP_CONFIG_FILE') == os.devnull and "
            "os.environ.__setitem__('PIP_CONFIG_FILE', os.path.join(sys.prefix, 'pip.conf'))\n")
os.environ['PIP_CONFIG_FILE'] = conf
ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel', '--disable-pip-version-check')]
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check'] + args)
