# escape=\
FROM a
RUN echo cafÃ© ÿþ invalid utf8
