-- The template a sent message was rendered from: the step's template or its
-- channel variant (``delivery-alert-sms``), next to ``template_version``.
-- NULL on rows sent before: "why did she get this?" then shows the step's.
ALTER TABLE outbox ADD COLUMN template_id TEXT;
