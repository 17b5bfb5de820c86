//! Builds the DLP multi-pattern DFA for one detector set.
