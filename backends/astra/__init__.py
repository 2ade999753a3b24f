"""ASTRA-sim backend: the same Program, written as Chakra traces and replayed by an external
ASTRA-sim analytical build (https://github.com/astra-sim/astra-sim), found through ASTRA_SIM_BIN."""
