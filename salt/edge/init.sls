{#- The edge on an edge host: the assigned release (pillar warren:edge:release,
    which may be absent: then the installed release stays), its config, TLS
    files and tunnels file, and the warren-edge service, run as the unprivileged
    user warren:user (warren/user.sls). See salt/README.md. -#}
{%- from "warren/map.jinja" import warren with context %}
{%- from "warren/macros.jinja" import require_keys, release_and_service with context %}
{%- set home = warren.root ~ '/edge' %}
{%- set edge = warren.edge %}
{%- set cfg = edge.get('config', {}) %}
{%- set tls = edge.get('tls', {}) %}
{{- require_keys('warren:edge:config', cfg, ['public_http', 'tunnel_listen', 'admin', 'location', 'edge_id']) }}
{{- require_keys('warren:edge:tls', tls, ['cert_pem', 'key_pem']) }}
{%- set after_fetch = ['cmd: warren-edge-verify'] if edge.get('release') else [] %}

include:
  - warren.user

# The install root stays traversable; the edge's own folder and its TLS
# folder open only to root and the service's group.
warren-edge-root:
  file.directory:
    - name: {{ warren.root }}
    - makedirs: True
    - mode: '0755'

warren-edge-dirs:
  file.directory:
    - names:
      - {{ home }}:
        - mode: '0750'
      - {{ home }}/releases:
        - mode: '0755'
      - {{ home }}/tls:
        - mode: '0750'
    - user: root
    - group: {{ warren.user }}
    - require:
      - file: warren-edge-root
      - user: warren-user

warren-edge-tls-cert:
  file.managed:
    - name: {{ home }}/tls/edge.pem
    - contents_pillar: warren:edge:tls:cert_pem
    - user: root
    - group: {{ warren.user }}
    - mode: '0644'
    - require:
      - file: warren-edge-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}

# A secret: readable by root and the service's group only, never shown in the
# state output. Salt writes it to a private (0600) temporary file beside it
# and moves that into place, so it is never world-readable, not even briefly.
warren-edge-tls-key:
  file.managed:
    - name: {{ home }}/tls/edge-key.pem
    - contents_pillar: warren:edge:tls:key_pem
    - user: root
    - group: {{ warren.user }}
    - mode: '0640'
    - show_changes: False
    - require:
      - file: warren-edge-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}

warren-edge-config:
  file.managed:
    - name: {{ home }}/edge.yaml
    - source: salt://warren/templates/edge.yaml.j2
    - template: jinja
    - user: root
    - group: {{ warren.user }}
    - mode: '0640'
    - context:
        home: {{ home | json }}
        cfg: {{ cfg | json }}
    - require:
      - file: warren-edge-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}

{%- if edge.get('tunnels') is not none %}

# The edge hot-reloads this file: a change does not restart it.
warren-edge-tunnels:
  file.serialize:
    - name: {{ home }}/tunnels.yaml
    - serializer: yaml
    - dataset:
        tunnels: {{ edge.tunnels | json }}
    - user: root
    - group: {{ warren.user }}
    - mode: '0640'
    - require:
      - file: warren-edge-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}
{%- endif %}

{{ release_and_service('edge', [cfg.public_http, cfg.tunnel_listen, cfg.admin], ['file: warren-edge-config', 'file: warren-edge-tls-cert', 'file: warren-edge-tls-key'], cfg.get('grace_period', '30s')) }}
