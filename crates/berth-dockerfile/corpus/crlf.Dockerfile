FROM a
RUN echo crlf \
  more
LABEL x=y
