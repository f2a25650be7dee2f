"""The mitmproxy script: `mitmdump -s ccany_addon/addon.py --mode reverse:https://api.openai.com`."""

from ccany_addon.flowlog.addon import FlowLog
from ccany_addon.gateway import Gateway

gateway = Gateway()
addons = [gateway, FlowLog(gateway)]
