"""`ccany [mitmdump flags]`: mitmdump with the gateway preloaded.

Loaded this way rather than with `-s`, the gateway's options exist before the command line is parsed,
so a bad `--set ccany_*=…` stops start-up with an error instead of silently disabling the addon.
"""

from __future__ import annotations

import sys

from mitmproxy.tools import main as mitmproxy_main
from mitmproxy.tools.dump import DumpMaster

from ccany_addon.proxy.assembly import build_addons


class GatewayMaster(DumpMaster):
    def __init__(self, options, **kwargs) -> None:
        super().__init__(options, **kwargs)
        self.addons.add(*build_addons())
        # Loopback unless told otherwise (`--listen-host 0.0.0.0`): the command line is applied after this.
        options.listen_host = "127.0.0.1"


def main(argv: list[str] | None = None) -> int | None:
    args = sys.argv[1:] if argv is None else argv
    mitmproxy_main.run(GatewayMaster, mitmproxy_main.cmdline.mitmdump, args)
    return None


if __name__ == "__main__":
    sys.exit(main())
