# One way to write a moment on every page, the admin's included: ISO-like, 24 h, with the zone
# (TIME_ZONE), so "03:19" is never read in the wrong zone. Django's English default would
# print "Dec. 4, 2026, 3:21 a.m." beside pages that print "2026-12-04 03:19".
DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i T"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
TIME_FORMAT = "H:i"
MONTH_DAY_FORMAT = "F j"
YEAR_MONTH_FORMAT = "F Y"
FIRST_DAY_OF_WEEK = 1
