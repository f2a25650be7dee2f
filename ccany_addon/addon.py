"""The mitmproxy script: `mitmdump -s ccany_addon/addon.py --mode reverse:https://api.openai.com`."""

from ccany_addon.proxy.assembly import build_addons

addons = build_addons()
