"""Mirror of the Finetuner 0.4 package of the same path; see finetuner_selfsup._bootstrap."""
