{#- The connector beside an origin: the assigned release (pillar
    warren:connector:release, which may be absent: then the installed release
    stays), its config, token and CA files, and the warren-connector service.
    See salt/README.md. -#}
{%- from "warren/map.jinja" import warren with context %}
{%- from "warren/macros.jinja" import require_keys, release_and_service with context %}
{%- set home = warren.root ~ '/connector' %}
{%- set conn = warren.connector %}
{%- set cfg = conn.get('config', {}) %}
{{- require_keys('warren:connector:config', cfg, ['edges', 'edge_server_name', 'admin', 'ingress']) }}
{{- require_keys('warren:connector', conn, ['token', 'ca_pem']) }}
{%- set after_fetch = ['cmd: warren-connector-verify'] if conn.get('release') else [] %}

warren-connector-dirs:
  file.directory:
    - names:
      - {{ home }}
      - {{ home }}/releases
    - makedirs: True
    - mode: '0755'

# A secret: mode 0600 and never shown in the state output.
warren-connector-token:
  file.managed:
    - name: {{ home }}/token
    - contents_pillar: warren:connector:token
    - mode: '0600'
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
    - mode: '0644'
    - context:
        home: {{ home | json }}
        cfg: {{ cfg | json }}
    - require:
      - file: warren-connector-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}

{{ release_and_service('connector', cfg.admin, ['file: warren-connector-config', 'file: warren-connector-token', 'file: warren-connector-ca'], cfg.get('grace_period', '30s')) }}
