"""Loading sōzu's ``config.toml``: every key checked, then the routing state the file describes.

:func:`load_config` reads the file and returns a :class:`Config`: the global settings as a frozen
model, the non-fatal findings as ``warnings``, and ``state``, the desired
:class:`~sozu_config.state.ConfigState`. The state is built by applying to an empty state, in
this order, the requests sōzu derives from a configuration file (reference §D.7):

1. ``add_http_listener`` for every HTTP listener, then ``add_https_listener``, then
   ``add_tcp_listener`` (file order; listeners created implicitly for frontends on an
   undeclared address follow the declared ones of their protocol), then the certificates
   declared on HTTPS listeners;
2. for every cluster, in file order: ``add_cluster``; for every frontend, in file order, its
   certificate (once per fingerprint and listener) and ``add_https_frontend``, or
   ``add_http_frontend``, or ``add_tcp_frontend``; then ``add_backend`` for every backend;
3. ``activate_listener`` for every listener when ``activate_listeners`` is true.

Rules (reference §B, with this project's decisions):

* unknown keys are errors, with a did-you-mean when a known key is close: top-level keys
  (sōzu ignores those), and keys of listener, cluster, frontend, backend, ``[metrics]`` and
  ``[admin]`` tables;
* keys this project does not implement are accepted with a warning when ignoring them is
  harmless (CPU affinity, …) and refused when ignoring them would change what the proxy does
  (UDP); the ``h2_*`` settings of an http listener are ignored with a warning (HTTP/2 is
  offered on HTTPS listeners only, by ALPN);
* ``[metrics]`` becomes :class:`MetricsSettings` (``Config.metrics``): the statsd export's
  address, format, prefix and ``detail`` level (default ``cluster``);
* the models carry content, never paths: certificates, keys and answer templates are read
  while loading. Relative paths of those files are looked up in the configuration file's
  directory first, then in the current working directory (sōzu's rule), so that both layouts
  work; ``command_socket``, ``saved_state``, ``pid_file_path`` and the audit logs are
  relative to the configuration file's directory and stored absolute;
* values must have their TOML type (``weight = "100"`` is an error, not a coercion), and
  enumerations are read case-insensitively (``ROUND_ROBIN``, ``round_robin``, ``use-same``).

Deliberate differences from sōzu:

* frontends default to ``position = TREE`` (DESIGN.md §5), not sōzu's accidental PRE;
* the default ``command_socket`` is ``sozu.sock`` next to the file, not in the working
  directory, and ``pid_file_path`` is relative to the file as well;
* a listener's ``certificate``/``key`` is added to that listener like any certificate (SNI
  picks it) and becomes its ``default_sni``, instead of being copied onto its frontends;
* an HTTPS frontend whose hostname no certificate of its listener covers (the listener's own,
  the frontends' certificates on that address; wildcards cover one label) is an error when
  the file is checked (:func:`check_config`, :func:`load_checked`), and a warning when the
  daemon loads it (:func:`load_config`: a certificate can be added at runtime); sōzu refuses
  it always;
* ``buffer_size`` is at least 16,393 bytes always, two backends of a cluster cannot share a
  ``backend_id``, and ``log_level`` must only name levels (a misspelt level is an error);
* ``max_command_buffer_size`` defaults to 64 MiB (sōzu: 2 MB).

Every problem is a :class:`ConfigError` naming the file, the table and the key; a pydantic
``ValidationError`` never escapes. :func:`load_config` raises the first one;
:func:`check_config` returns a :class:`ConfigReport` with every error of the file and its
warnings (:class:`ConfigWarning`), each with the line and column of its table or key.
:func:`load_checked` loads a file only when it has no error, refusing it with all of them
(:class:`ConfigRefused`): what ``sozu-apply`` does with its target file.

The reading itself lives in :mod:`sozu_config.configfile`: one pydantic model per kind of table
(:mod:`~sozu_config.configfile.models`), the cross-table rules and the state they build
(:mod:`~sozu_config.configfile.rules`).
"""

from __future__ import annotations

from .configfile.errors import ConfigError, ConfigRefused, ConfigReport, ConfigWarning, finding_line
from .configfile.loader import (
    MAX_CONFIG_BYTES,
    check_config,
    check_config_text,
    checked_config,
    load_checked,
    load_config,
    load_config_text,
)
from .configfile.named_files import MAX_NAMED_FILE_BYTES
from .configfile.settings import AdminSettings, Config, MetricDetail, MetricsSettings

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_NAMED_FILE_BYTES",
    "AdminSettings",
    "Config",
    "ConfigError",
    "ConfigRefused",
    "ConfigReport",
    "ConfigWarning",
    "MetricDetail",
    "MetricsSettings",
    "check_config",
    "check_config_text",
    "checked_config",
    "finding_line",
    "load_checked",
    "load_config",
    "load_config_text",
]
