{#- The rollout controller's API on a host (`rollout serve`): its release
    (pillar warren:rollout:release, set in the static pillar: the controller
    does not assign its own version; absent, the installed release stays),
    its config, the API and webhook token files, TLS files when given, its
    database folder, and the warren-rollout service, run as the unprivileged
    user warren:user (warren/user.sls). See salt/README.md. -#}
{%- from "warren/map.jinja" import warren with context %}
{%- from "warren/macros.jinja" import require_keys, release_and_service with context %}
{%- set home = warren.root ~ '/rollout' %}
{%- set ctl = warren.rollout %}
{%- set cfg = ctl.get('config') or {} %}
{%- set tls = ctl.get('tls') or {} %}
{%- set listen = (cfg.get('listen') or '127.0.0.1:9099') | string %}
{{- require_keys('warren:rollout', ctl, ['api_token', 'webhook_token']) }}
{%- if tls %}
{{-   require_keys('warren:rollout:tls', tls, ['cert_pem', 'key_pem']) }}
{%- endif %}
{#- serve refuses such an address without TLS (and the token, which is
    always given here): say so now rather than after a failed start. -#}
{%- set host = listen.rsplit(':', 1)[0] %}
{%- if not tls and not (host.startswith('127.') or host == '[::1]') %}
{{ raise('pillar warren:rollout:config:listen ' ~ listen ~ ' is not a loopback address: the pillar, the rollouts and the token would cross the network in plain HTTP, so rollout serve refuses it; give warren:rollout:tls (cert_pem, key_pem) or listen on 127.0.0.1') }}
{%- endif %}
{#- The URL is a secret (a PostgreSQL URL holds a password): only its scheme
    is looked at here, and no message repeats it. -#}
{%- set database = ctl.get('database') %}
{%- if database is not none and not ((database | string).startswith('postgres://') or (database | string).startswith('postgresql://')) %}
{{ raise('pillar warren:rollout:database must be a postgres:// or postgresql:// URL (a store shared by several controllers); leave it out for the SQLite store in ' ~ home ~ '/data') }}
{%- endif %}
{%- set after_fetch = ['cmd: warren-rollout-verify'] if ctl.get('release') else [] %}
{%- set command = [home ~ '/current/rollout', 'serve', '--config', home ~ '/rollout.yaml',
                   '--listen', listen,
                   '--api-token-file', home ~ '/api-token',
                   '--webhook-token-file', home ~ '/webhook-token'] %}
{%- set restart_on = ['file: warren-rollout-config', 'file: warren-rollout-api-token', 'file: warren-rollout-webhook-token', 'file: warren-rollout-data'] %}
{%- if tls %}
{%-   do command.extend(['--tls-cert', home ~ '/tls/rollout.pem', '--tls-key', home ~ '/tls/rollout-key.pem']) %}
{%-   do restart_on.extend(['file: warren-rollout-tls-cert', 'file: warren-rollout-tls-key']) %}
{%- endif %}

include:
  - warren.user

# The install root stays traversable; the controller's own folder (and its
# TLS folder) open only to root and the service's group.
warren-rollout-root:
  file.directory:
    - name: {{ warren.root }}
    - makedirs: True
    - mode: '0755'

warren-rollout-dirs:
  file.directory:
    - names:
      - {{ home }}:
        - mode: '0750'
      - {{ home }}/releases:
        - mode: '0755'
{%- if tls %}
      - {{ home }}/tls:
        - mode: '0750'
{%- endif %}
    - user: root
    - group: {{ warren.user }}
    - require:
      - file: warren-rollout-root
      - user: warren-user

# The SQLite store (when no PostgreSQL URL is given): the only folder the
# service writes, and nobody else reads.
warren-rollout-data:
  file.directory:
    - name: {{ home }}/data
    - user: {{ warren.user }}
    - group: {{ warren.user }}
    - mode: '0700'
    - require:
      - file: warren-rollout-dirs

{%- for name, key in [('api-token', 'api_token'), ('webhook-token', 'webhook_token')] %}

# A secret: readable by root and the service's group only, never shown in the
# state output. Salt writes it to a private (0600) temporary file beside it
# and moves that into place, so it is never world-readable, not even briefly.
warren-rollout-{{ name }}:
  file.managed:
    - name: {{ home }}/{{ name }}
    - contents_pillar: warren:rollout:{{ key }}
    - user: root
    - group: {{ warren.user }}
    - mode: '0640'
    - show_changes: False
    - require:
      - file: warren-rollout-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}
{%- endfor %}

# Holds the database URL, a secret: the template reads it from the pillar
# itself, so it is in no state's arguments, and its changes are never shown.
warren-rollout-config:
  file.managed:
    - name: {{ home }}/rollout.yaml
    - source: salt://warren/templates/rollout.yaml.j2
    - template: jinja
    - user: root
    - group: {{ warren.user }}
    - mode: '0640'
    - show_changes: False
    - context:
        home: {{ home | json }}
    - require:
      - file: warren-rollout-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}

{%- if tls %}

warren-rollout-tls-cert:
  file.managed:
    - name: {{ home }}/tls/rollout.pem
    - contents_pillar: warren:rollout:tls:cert_pem
    - user: root
    - group: {{ warren.user }}
    - mode: '0644'
    - require:
      - file: warren-rollout-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}

# A secret, written as the tokens are.
warren-rollout-tls-key:
  file.managed:
    - name: {{ home }}/tls/rollout-key.pem
    - contents_pillar: warren:rollout:tls:key_pem
    - user: root
    - group: {{ warren.user }}
    - mode: '0640'
    - show_changes: False
    - require:
      - file: warren-rollout-dirs
      {%- for id in after_fetch %}
      - {{ id }}
      {%- endfor %}
{%- endif %}

{#- serve answers /healthz once its store is open and its port bound; it
    finishes the requests in flight at TERM, which are short. -#}
{{ release_and_service('rollout', [listen], restart_on, '10s', [], command | join(' '), '/healthz', 'https' if tls else 'http', [home ~ '/data']) }}
