{#- The edge on an edge host: the assigned release (pillar warren:edge:release,
    which may be absent: then the installed release stays), its config, TLS
    files and tunnels file, and the warren-edge service. See salt/README.md. -#}
{%- from "warren/map.jinja" import warren with context %}
{%- from "warren/macros.jinja" import require_keys, release_and_service with context %}
{%- set home = warren.root ~ '/edge' %}
{%- set edge = warren.edge %}
{%- set cfg = edge.get('config', {}) %}
{%- set tls = edge.get('tls', {}) %}
{{- require_keys('warren:edge:config', cfg, ['public_http', 'tunnel_listen', 'admin', 'location', 'edge_id']) }}
{{- require_keys('warren:edge:tls', tls, ['cert_pem', 'key_pem']) }}
{%- set after_fetch = ['cmd: warren-edge-verify'] if edge.get('release') else [] %}

warren-edge-dirs:
  file.directory:
    - names:
      - {{ home }}
      - {{ home }}/releases
      - {{ home }}/tls
    - makedirs: True
    - mode: '0755'

warren-edge-tls-cert:
  file.managed:
    - name: {{ home }}/tls/edge.pem
    - contents_pillar: warren:edge:tls:cert_pem
    - mode: '0644'
    - require:
      - file: warren-edge-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}

warren-edge-tls-key:
  file.managed:
    - name: {{ home }}/tls/edge-key.pem
    - contents_pillar: warren:edge:tls:key_pem
    - mode: '0600'
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
    - mode: '0644'
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
    - mode: '0644'
    - require:
      - file: warren-edge-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}
{%- endif %}

{{ release_and_service('edge', cfg.admin, ['file: warren-edge-config', 'file: warren-edge-tls-cert', 'file: warren-edge-tls-key'], cfg.get('grace_period', '30s')) }}
