{#- The system user (and its group of the same name) that the edge and the
    connector run as: no login shell, no home, never root. Both states
    include this one. -#}
{%- from "warren/map.jinja" import warren with context %}

# Several minions sharing one /etc/passwd (the local fleet) may race to add
# the same user; a retry finds it present.
warren-group:
  group.present:
    - name: {{ warren.user }}
    - system: True
    - retry:
        attempts: 3
        interval: 2

warren-user:
  user.present:
    - name: {{ warren.user }}
    - gid: {{ warren.user }}
    - system: True
    - home: /nonexistent
    - createhome: False
    - shell: /usr/sbin/nologin
    - require:
      - group: warren-group
    - retry:
        attempts: 3
        interval: 2
