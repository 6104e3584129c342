"""One module per command; each defines ``command`` (click) and ``main`` (console_scripts entry point).

COMMANDS lists the commands that exist; setup.cfg's console_scripts, bin/ and man/ follow it
(tests/test_cli.py checks that they agree).
"""

COMMANDS = {
    "sr-train": "srtools.commands.train",
    "sr-serve": "srtools.commands.serve",
    "sr-tcsr": "srtools.commands.tcsr",
    "sr-monitor": "srtools.commands.monitor",
    "sr-compare": "srtools.commands.compare",
    "sr-tile": "srtools.commands.tile",
    "sr-edge": "srtools.commands.edge",
    "sr-cache": "srtools.commands.cache",
    "sr-proxy": "srtools.commands.proxy",
    "sr-sim": "srtools.commands.sim",
    "sr-push": "srtools.commands.push",
    "sr-hls": "srtools.commands.hls",
    "sr-live": "srtools.commands.live",
    "sr-upload": "srtools.commands.upload",
    "sr-receive": "srtools.commands.receive",
    "sr-eval": "srtools.commands.eval",
}
