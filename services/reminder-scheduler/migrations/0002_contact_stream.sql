-- The contact stream of each reminder's client (an HMAC of the number, see
-- kit::contacts), so that forgetting a contact (ContactForgotten names that
-- stream) can blank the rows that hold their number and text.
ALTER TABLE scheduler.reminders ADD COLUMN contact_stream text;
CREATE INDEX reminders_contact_stream ON scheduler.reminders (contact_stream);
