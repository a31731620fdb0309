"""Grafana as code: the provisioned dashboards, alert rules, contact points and policies.

`build` generates every object (the files under `grafana/` are its output, checked by a test);
`macros` expands Grafana's InfluxQL macros and template variables as Grafana does; `rules`
evaluates alert rules (query → reduce → threshold/math/classic condition) with Grafana's semantics;
`routing` walks the notification-policy tree; `validate` checks structure; `sync` pushes it all to
a running Grafana with `grafana-client`.
"""
