# Every host gets the state of its role (grain `role`). The version each host
# runs comes from pillar warren:COMPONENT:release, which the rollout
# controller serves (see master.example and README.md).
base:
  'role:edge':
    - match: grain
    - edge
  'role:connector':
    - match: grain
    - connector
