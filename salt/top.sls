# Every host gets the state of its role (grain `role`). The version each edge
# and connector host runs comes from pillar warren:COMPONENT:release, which
# the rollout controller serves (see master.example and README.md); the
# controller's own (role rollout) comes from the static pillar.
base:
  'role:edge':
    - match: grain
    - edge
  'role:connector':
    - match: grain
    - connector
  'role:rollout':
    - match: grain
    - rollout
