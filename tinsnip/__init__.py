"""tinsnip: a homelab platform on a Synology NAS and a few Docker hosts.

Layers, from the bottom up (only `remote` and `engine` talk to hosts; only `tasks` knows invoke):

- `smep`, `inventory`, `config`: numbers, hosts.yaml and settings (pure);
- `steps`, `facts`, `render`, `exports`, `plans/*`: desired state → steps (pure);
- `remote`: the one place that opens SSH connections (Fabric);
- `engine`: gather facts → plan → show → apply → verify, per host;
- `tasks/*`: the invoke task tree served by `inv` and `tin`.
"""

__version__ = "0.1.0"
