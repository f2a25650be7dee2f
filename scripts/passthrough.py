"""The bare baseline for scripts/bench: mitmproxy's streaming pass-through and nothing else."""

from mitmproxy import http


class StreamPassthrough:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        flow.response.stream = True


addons = [StreamPassthrough()]
