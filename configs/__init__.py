"""The shipped defaults, as package data: default.yaml, policy profiles (policies/), destination rules
(destinations/) and script rules. Read through `studio.resources`, so an installed wheel finds them wherever it
runs from."""
