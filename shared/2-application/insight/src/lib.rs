//! The sales report (see `docs/sales.md`): the seven sections computed from facts, and their text,
//! JSON, HTML (inline SVG charts) and campaign CSV renderings. Pure: the caller reads the facts.
