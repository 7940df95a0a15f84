{#- The connector beside an origin: the assigned release (pillar
    warren:connector:release, which may be absent: then the installed release
    stays), its config, token and CA files, and the warren-connector service,
    run as the unprivileged user warren:user (warren/user.sls). See
    salt/README.md. -#}
{%- from "warren/map.jinja" import warren with context %}
{%- from "warren/macros.jinja" import require_keys, release_and_service with context %}
{%- set home = warren.root ~ '/connector' %}
{%- set conn = warren.connector %}
{%- set cfg = conn.get('config', {}) %}
{{- require_keys('warren:connector:config', cfg, ['edges', 'edge_server_name', 'admin', 'ingress']) }}
{{- require_keys('warren:connector', conn, ['token', 'ca_pem']) }}
{%- set after_fetch = ['cmd: warren-connector-verify'] if conn.get('release') else [] %}
{#- Files outside its folder the connector reads or connects to: origin unix
    sockets and CA pools (the systemd sandbox must not hide them). -#}
{%- set outside = [] %}
{%- for req in [cfg.get('origin_request') or {}] + cfg.ingress | map(attribute='origin_request', default={}) | list %}
{%-   if (req or {}).get('ca_pool') %}{% do outside.append(req.ca_pool | string) %}{% endif %}
{%- endfor %}
{%- for rule in cfg.ingress %}
{%-   if (rule.get('service') | string).startswith('unix:') %}{% do outside.append((rule.service | string)[5:]) %}{% endif %}
{%- endfor %}

include:
  - warren.user

# The install root stays traversable; the connector's own folder opens only
# to root and the service's group.
warren-connector-root:
  file.directory:
    - name: {{ warren.root }}
    - makedirs: True
    - mode: '0755'

warren-connector-dirs:
  file.directory:
    - names:
      - {{ home }}:
        - mode: '0750'
      - {{ home }}/releases:
        - mode: '0755'
    - user: root
    - group: {{ warren.user }}
    - require:
      - file: warren-connector-root
      - user: warren-user

# A secret: readable by root and the service's group only, never shown in the
# state output. Salt writes it to a private (0600) temporary file beside it
# and moves that into place, so it is never world-readable, not even briefly.
warren-connector-token:
  file.managed:
    - name: {{ home }}/token
    - contents_pillar: warren:connector:token
    - user: root
    - group: {{ warren.user }}
    - mode: '0640'
    - show_changes: False
    - require:
      - file: warren-connector-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}

warren-connector-ca:
  file.managed:
    - name: {{ home }}/ca.pem
    - contents_pillar: warren:connector:ca_pem
    - user: root
    - group: {{ warren.user }}
    - mode: '0644'
    - require:
      - file: warren-connector-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}

warren-connector-config:
  file.managed:
    - name: {{ home }}/connector.yaml
    - source: salt://warren/templates/connector.yaml.j2
    - template: jinja
    - user: root
    - group: {{ warren.user }}
    - mode: '0640'
    - context:
        home: {{ home | json }}
        cfg: {{ cfg | json }}
    - require:
      - file: warren-connector-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}

{{ release_and_service('connector', [cfg.admin], ['file: warren-connector-config', 'file: warren-connector-token', 'file: warren-connector-ca'], cfg.get('grace_period', '30s'), outside) }}
